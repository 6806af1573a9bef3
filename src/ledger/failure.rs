//! What happens when an operation fails: the failure is recorded in the ledger, every
//! live participant cleans up after itself, and the coordinator finishes the job.
//!
//! 1. Detection: whoever sees the failure first (a call failing with `fail_on_crash`, a
//!    crashed participant) moves the operation from `running` to `cleanup`, records the
//!    reason and `detectionTimestamp`, and becomes the coordinator.
//! 2. Self-cleanup: every participant that sees `cleanup` (through the change watch or its
//!    heartbeat) fires `failed()`, runs its calls' `on_operation_failed` / `on_cleanup`,
//!    cancels its spawned calls (which stops their workers), deletes its temp resources and
//!    marks its frames `cleanedUp`.
//! 3. Removal: the coordinator waits until every other live participant is done (bounded),
//!    deletes temp resources left by dead owners, removes all frames, sets `failed` and
//!    `removalTimestamp`, and archives the operation.
//!
//! What changes in the ledger, and when, is decided by the core (`core::failure::fail`,
//! `core::cleanup`); this module waits, stops, deletes and archives around it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::CallId;
use crate::model::{LedgerData, LogLevel, OperationState};

use super::LedgerInner;
use super::callbacks::OperationFailedInfo;
use super::core::{self, Live, failure::Failure};
use super::shared::OpShared;
use super::spawned::CallPhase;

/// The failure as participants see it, from the recorded data.
pub(crate) fn info_from(data: &LedgerData, now: Timestamp) -> OperationFailedInfo {
    let (reason, crashed) = match &data.failure {
        Some(f) => (f.reason.clone(), f.crashed_call_ids.clone()),
        None => (
            format!("operation entered {} state", data.operation_state),
            Vec::new(),
        ),
    };
    OperationFailedInfo {
        operation_id: data.operation_id.clone(),
        failed_at: data.detection_timestamp.unwrap_or(now),
        reason: Some(reason),
        crashed_call_ids: crashed,
    }
}

/// Record the failure and, if this participant is the first to do so, coordinate the
/// cleanup. Returns once the failure is recorded (the cleanup goes on in the background).
pub(crate) async fn fail_operation(
    shared: &Arc<OpShared>,
    reason: String,
    crashed_calls: Vec<CallId>,
) -> Result<()> {
    if record_failure(shared, reason, crashed_calls).await? {
        start_coordination(shared);
    }
    Ok(())
}

/// Coordinate the cleanup in the background; leave and dispose wait for it.
pub(crate) fn start_coordination(shared: &Arc<OpShared>) {
    let coordinator = shared.clone();
    let task = super::shared::spawn(async move { coordinate(coordinator).await });
    shared.local().coordination = Some(task);
}

/// Move a running operation to `cleanup` with this participant as coordinator. Returns
/// whether this call did it (false: the operation was already failing).
pub(crate) async fn record_failure(
    shared: &Arc<OpShared>,
    reason: String,
    crashed_calls: Vec<CallId>,
) -> Result<bool> {
    let me = shared.ledger.config.participant.clone();
    let mut became_coordinator = false;
    let result = shared
        .modify(|data, now| {
            let mut failure = Failure::new(reason.clone(), &me);
            failure.crashed_calls = crashed_calls.clone();
            became_coordinator = core::failure::fail(data, now, failure).coordinates();
            Ok(())
        })
        .await;
    match result {
        Ok(_) if became_coordinator => {
            shared
                .log_quietly(
                    LogLevel::Error,
                    &format!("OPERATION_FAILED reason={reason}"),
                )
                .await;
            shared
                .log_quietly(LogLevel::Info, &format!("CLEANUP_STARTED coordinator={me}"))
                .await;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) => {
            // The ledger refused (fenced, ended, gone): still fail locally.
            shared.fail_locally(OperationFailedInfo {
                operation_id: shared.id.clone(),
                failed_at: shared.now(),
                reason: Some(reason),
                crashed_call_ids: crashed_calls,
            });
            Err(e)
        }
    }
}

/// The signal path, before the workers are stopped: the initiator sets the abort flag
/// (the other participants start stopping at once) and the interruption is recorded.
pub(crate) async fn record_interruption(shared: &Arc<OpShared>, sig: crate::process::Signal) {
    let initiator = shared.is_initiator;
    let reason = format!("interrupted by {sig}");
    let me = shared.ledger.config.participant.clone();
    let result = shared
        .modify(|data, now| {
            if initiator {
                data.aborted = true;
            }
            core::failure::fail(data, now, Failure::new(reason.clone(), &me));
            Ok(())
        })
        .await;
    if result.is_ok() {
        shared
            .log_quietly(
                LogLevel::Error,
                &format!("OPERATION_FAILED reason={reason}"),
            )
            .await;
    }
}

/// The signal path, after the workers are stopped: finish this participant's cleanup and,
/// as coordinator (or when the coordinator is gone), remove and archive — all before the
/// process exits.
pub(crate) async fn finish_interruption(shared: Arc<OpShared>) {
    let task = shared.local().self_cleanup.take();
    if let Some(task) = task {
        let _ = task.await;
    }
    let me = shared.ledger.config.participant.clone();
    let takes_over = match shared.ledger.store.read(&shared.id).await {
        Ok(data) => core::cleanup::takes_over(&data, &me, &live(&data, &shared.ledger)),
        Err(_) => false,
    };
    if takes_over {
        coordinate(shared).await;
    }
}

/// Phase 2 for this participant: stop its calls, delete its temp resources, mark its
/// frames cleaned up.
pub(crate) async fn self_cleanup(shared: Arc<OpShared>, info: OperationFailedInfo) {
    let calls: Vec<_> = {
        let local = shared.local();
        local
            .calls
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    c.cancel.clone(),
                    c.done.clone(),
                    c.on_cleanup.clone(),
                    c.on_operation_failed.clone(),
                )
            })
            .collect()
    };
    for (id, cancel, _, _, on_failed) in &calls {
        if let Some(token) = cancel {
            token.cancel();
        }
        // A panicking callback must not stop this participant's cleanup.
        if let Some(f) = on_failed
            && let Err(panic) = super::panic::guarded(|| f(info.clone())).await
        {
            shared
                .log_quietly(
                    LogLevel::Error,
                    &format!(
                        "CALLBACK_PANICKED callId={id} error=on_operation_failed panicked: {panic}"
                    ),
                )
                .await;
        }
    }
    // Regular calls have nobody else to run their cleanup; spawned calls run it as they fail.
    for (id, cancel, _, on_cleanup, _) in &calls {
        if cancel.is_none() {
            let _ = super::call::run_cleanup(&shared, id, on_cleanup.as_ref()).await;
        }
    }
    let wait = shared.ledger.config.cleanup_wait;
    for (_, _, done, _, _) in calls {
        if let Some(mut done) = done {
            let _ = tokio::time::timeout(wait, done.wait_for(|p| *p == CallPhase::Done)).await;
        }
    }
    let temps: Vec<_> = std::mem::take(&mut shared.local().temps)
        .into_iter()
        .collect();
    super::temps::delete_paths(&shared.ledger, &shared.id, &temps).await;
    for path in &temps {
        crate::cleanup::CleanupHandler::global().remove_temp_path(path);
    }
    let me = shared.ledger.config.participant.clone();
    let _ = shared
        .modify(|data, _| {
            core::frames::cleaned_up(data, &me, &temps);
            Ok(())
        })
        .await;
    shared
        .log_quietly(LogLevel::Info, &format!("CLEANUP_DONE participant={me}"))
        .await;
}

/// Phase 3, by the coordinator: wait for the others, remove what is left, archive.
pub(crate) async fn coordinate(shared: Arc<OpShared>) {
    let me = shared.ledger.config.participant.clone();
    let deadline = tokio::time::Instant::now() + shared.ledger.config.cleanup_wait;
    let mut changes = shared.ledger.store.watch(&shared.id).ok();
    // The view the wait ended on is the one the dead participants' workers are found in.
    let data = loop {
        let Ok(data) = shared.ledger.store.read(&shared.id).await else {
            return;
        };
        let waiting = core::cleanup::waiting(&data, &me, &live(&data, &shared.ledger));
        if !waiting || tokio::time::Instant::now() >= deadline {
            break data;
        }
        let tick = Duration::from_millis(200);
        match changes.as_mut() {
            Some(rx) => {
                rx.next_within(tick).await;
            }
            None => tokio::time::sleep(tick).await,
        }
    };
    // Workers recorded by participants that are dead (or declared crashed) have nobody
    // else to stop them. Never this process's own group: a participant started inside a
    // dead participant's worker (a nested `exec`) lives in that worker's group.
    let own_group = nix::unistd::getpgrp().as_raw();
    let live = live(&data, &shared.ledger);
    let dead_workers = core::cleanup::orphaned_workers(&data, &me, &live, own_group);
    if !dead_workers.is_empty() {
        let grace = super::crash::grace_of(&shared);
        let stopped = super::crash::stop_workers(&shared.id, &dead_workers, grace).await;
        shared
            .log_quietly(LogLevel::Info, &format!("WORKERS_STOPPED count={stopped}"))
            .await;
    }
    let here = super::recovery_proof::here(&shared.ledger.identity);
    let mut swept = Default::default();
    let result = shared
        .modify(|data, now| {
            swept = core::cleanup::remove(data, &here, now);
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::debug!(operation = %shared.id, error = %e, "cleanup not finished here");
        return;
    }
    super::effects::run(&shared, core::cleanup::after_removal(swept, &me)).await;
}

/// Which participants are alive now, for the core's decisions on `data`.
pub(crate) fn live(data: &LedgerData, ledger: &LedgerInner) -> Live {
    Live(
        Live::candidates(data)
            .into_iter()
            .filter(|id| ledger.presence.is_live(data, id))
            .collect(),
    )
}

/// Archive the operation and report the location.
pub(crate) async fn archive(shared: &Arc<OpShared>) {
    match shared.ledger.store.archive(&shared.id).await {
        Ok(location) => {
            if let Some(f) = &shared.ledger.callback.on_backup_created {
                super::panic::call_quietly("on_backup_created", || f(location.location()));
            }
        }
        Err(e) => tracing::warn!(operation = %shared.id, error = %e, "archive failed"),
    }
    shared.stop_tasks();
    shared.ledger.forget(&shared.id);
}

/// The operation file vanished: archived by someone. Learn how it ended; calls of this
/// participant still running (the initiator forced the completion) are cancelled, so
/// none of its workers outlives the operation.
pub(crate) async fn on_disappeared(shared: &Arc<OpShared>) {
    match shared.ledger.store.read_archived(&shared.id).await {
        Ok(data) if data.operation_state != OperationState::Completed => {
            shared.fail_locally(info_from(&data, shared.now()));
        }
        _ => {
            let mut calls: Vec<CallId> = shared.local().calls.keys().cloned().collect();
            calls.sort();
            if !calls.is_empty() {
                let shared = shared.clone();
                super::shared::spawn(async move {
                    super::call::cancel_calls(&shared, &calls, "operation ended").await;
                });
            }
        }
    }
    shared.stop_tasks();
}

/// `Error::OperationEnded` and `OperationNotFound` mean the operation is over.
pub(crate) fn is_gone(e: &Error) -> bool {
    matches!(
        e,
        Error::OperationEnded { .. } | Error::OperationNotFound(_)
    )
}
