//! [`Operation`]: one session's handle on an operation.
//!
//! Each `create_operation` / `join_operation` returns a new session; calls are tracked
//! per session so `leave` only waits for (or cancels) the calls made through it. All
//! sessions of one operation in one `Ledger` share the participant's registration,
//! heartbeat, abort and failure signals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cleanup::CleanupHandler;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId, ParticipantId};
use crate::model::{LedgerData, LogLevel, OperationState, TempResource};
use crate::store::LogKind;

use super::callbacks::OperationFailedInfo;
use super::core::{self, join_ids};
use super::shared::OpShared;

/// A session's handle on an operation. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Operation {
    pub(crate) shared: Arc<OpShared>,
    pub(crate) session: u64,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("operation_id", &self.shared.id)
            .field("participant_id", &self.shared.ledger.config.participant)
            .field("session_id", &self.session)
            .finish()
    }
}

impl Operation {
    pub(crate) fn from_shared(shared: Arc<OpShared>, session: u64) -> Self {
        Self { shared, session }
    }

    /// Session id (0 for internal handles passed to callbacks of no session).
    pub fn session_id(&self) -> u64 {
        self.session
    }

    pub fn operation_id(&self) -> &OperationId {
        &self.shared.id
    }

    pub fn participant_id(&self) -> &ParticipantId {
        &self.shared.ledger.config.participant
    }

    pub fn pid(&self) -> i32 {
        self.shared.ledger.config.pid
    }

    pub fn is_initiator(&self) -> bool {
        self.shared.is_initiator
    }

    /// Creation time for the initiator, local join time for a joiner.
    pub fn start_time(&self) -> Timestamp {
        self.shared.start_time
    }

    pub fn start_time_iso(&self) -> String {
        crate::model::time::format(&self.shared.start_time)
    }

    pub fn start_time_ms(&self) -> i64 {
        self.shared.start_time.timestamp_millis()
    }

    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Elapsed time as `SSS.mmm`.
    pub fn elapsed_formatted(&self) -> String {
        let e = self.elapsed();
        format!("{:03}.{:03}", e.as_secs(), e.subsec_millis())
    }

    /// The operation as last seen by this participant.
    pub fn cached_data(&self) -> Option<LedgerData> {
        self.shared.local().cached.as_deref().cloned()
    }

    /// Registration epoch of this participant in the operation.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// The one stale threshold of this connection (see [`Connect::stale_threshold`]).
    ///
    /// [`Connect::stale_threshold`]: super::Connect::stale_threshold
    pub fn staleness_threshold(&self) -> Duration {
        self.shared.ledger.presence.stale_threshold()
    }

    /// Change the one stale threshold of this connection: every judgement from now on,
    /// in every operation of this ledger, uses it (there is no per-operation threshold).
    pub fn set_staleness_threshold(&self, threshold: Duration) {
        self.shared.ledger.presence.set_stale_threshold(threshold);
    }

    // ----- pending calls of this session -----

    /// Ids of this session's open regular calls.
    pub fn pending_calls(&self) -> Vec<CallId> {
        self.pending(false)
    }

    /// Ids of this session's unfinished spawned calls.
    pub fn pending_spawned_calls(&self) -> Vec<CallId> {
        self.pending(true)
    }

    fn pending(&self, spawned: bool) -> Vec<CallId> {
        let mut ids: Vec<CallId> = self
            .shared
            .local()
            .calls
            .iter()
            .filter(|(_, c)| c.session == self.session && c.cancel.is_some() == spawned)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn pending_call_count(&self) -> usize {
        let local = self.shared.local();
        local
            .calls
            .values()
            .filter(|c| c.session == self.session)
            .count()
    }

    pub fn has_pending_calls(&self) -> bool {
        self.pending_call_count() > 0
    }

    // ----- logs -----

    /// Write `{RFC3339 UTC} [LEVEL] message` to the operation log. Refused with `Fenced`
    /// once this participant was declared crashed (the ledger is read first to know).
    pub async fn log(&self, message: &str, level: LogLevel) -> Result<()> {
        self.shared.check_fenced_now().await?;
        self.shared.log(level, message).await
    }

    /// `{elapsed} | {indent}[{participant}] {message}` at INFO, also sent to `tracing`.
    pub async fn log_message(&self, depth: usize, message: &str) -> Result<()> {
        let line = format!(
            "{} | {}[{}] {}",
            self.elapsed_formatted(),
            "    ".repeat(depth),
            self.participant_id(),
            message
        );
        tracing::info!("{line}");
        self.shared.check_fenced_now().await?;
        self.shared.log(LogLevel::Info, &line).await
    }

    /// Write `{RFC3339 UTC} message` to the debug log (refused with `Fenced` like `log`).
    pub async fn debug_log(&self, message: &str) -> Result<()> {
        self.shared.check_fenced_now().await?;
        let line = format!(
            "{} {}",
            crate::model::time::format(&self.shared.now()),
            message
        );
        self.shared
            .ledger
            .store
            .append_log(&self.shared.id, LogKind::Debug, &line)
            .await
    }

    // ----- state -----

    pub async fn operation_state(&self) -> Result<OperationState> {
        let data = self.shared.ledger.store.read(&self.shared.id).await?;
        self.shared.observe(&data);
        Ok(data.operation_state)
    }

    /// Set the operation state by hand (logged as `OPERATION_STATE_CHANGED`).
    pub async fn set_operation_state(&self, state: OperationState) -> Result<()> {
        self.shared
            .modify(|data, _| {
                data.operation_state = state;
                Ok(())
            })
            .await?;
        self.shared
            .log_quietly(
                LogLevel::Info,
                &format!("OPERATION_STATE_CHANGED state={state}"),
            )
            .await;
        Ok(())
    }

    /// Re-read the operation from the store.
    pub async fn refresh(&self) -> Result<LedgerData> {
        let data = self.shared.ledger.store.read(&self.shared.id).await?;
        self.shared.observe(&data);
        Ok(data)
    }

    // ----- abort -----

    /// Whether this participant has seen the abort.
    pub fn is_aborted(&self) -> bool {
        self.shared.is_aborted()
    }

    /// Read the abort flag from the ledger; a set flag also aborts this participant.
    pub async fn check_abort(&self) -> Result<bool> {
        Ok(self.refresh().await?.aborted)
    }

    /// Set or clear the abort flag in the ledger. Participants on this machine learn of it
    /// at once through change notification; others at their next heartbeat.
    pub async fn set_abort_flag(&self, aborted: bool) -> Result<()> {
        self.shared
            .modify(|data, _| {
                data.aborted = aborted;
                Ok(())
            })
            .await?;
        self.shared
            .log_quietly(
                LogLevel::Warning,
                &format!("ABORT_FLAG_SET value={aborted}"),
            )
            .await;
        Ok(())
    }

    /// Abort this participant now, and write the abort flag so the others follow.
    pub fn trigger_abort(&self) {
        self.shared.abort_locally();
        let op = self.clone();
        super::shared::spawn(async move {
            if let Err(e) = op.set_abort_flag(true).await {
                tracing::debug!(operation = %op.shared.id, error = %e, "abort flag not written");
            }
        });
    }

    /// Resolves when this participant sees the abort (at once if it already has).
    pub async fn aborted(&self) {
        let mut rx = self.shared.subscribe_aborted();
        let _ = rx.wait_for(|a| *a).await;
    }

    /// Resolves with the failure when the operation fails.
    pub async fn failed(&self) -> OperationFailedInfo {
        let mut rx = self.shared.subscribe_failed();
        // Take the value out before any other await: the borrow is not `Send`.
        let info = rx
            .wait_for(|f| f.is_some())
            .await
            .ok()
            .and_then(|f| f.clone());
        match info {
            Some(info) => info,
            // The sender lives as long as `shared`, which we hold.
            None => std::future::pending().await,
        }
    }

    /// The failure, if the operation has failed.
    pub fn failure(&self) -> Option<OperationFailedInfo> {
        self.shared.failure()
    }

    /// Record the operation as failed and start the cleanup (this participant coordinates
    /// unless another one was first).
    pub async fn fail(&self, reason: &str) -> Result<()> {
        super::failure::fail_operation(&self.shared, reason.to_string(), Vec::new()).await
    }

    // ----- temp resources -----

    /// Register a path to delete if the operation fails, is aborted, or this participant
    /// crashes. Recorded in the ledger and locally (for signal cleanup).
    ///
    /// The path is stored absolute and normalised (relative to the current directory; see
    /// [`crate::temp_path::normalise`]) and losslessly (any bytes). `/`, the home
    /// directory, mount points, the ledger directory (and its content) and their ancestors
    /// are refused with [`Error::TempPathRefused`], and nothing is registered.
    pub async fn register_temp_resource(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = super::temps::registrable(&self.shared.ledger, path.as_ref())?;
        self.shared.local().temps.insert(path.clone());
        // For the signal cleanup, should the application install it: a second Ctrl+C
        // skips the ledger work but still deletes these.
        let handler = CleanupHandler::global();
        if let Some(dir) = super::temps::ledger_dir(&self.shared.ledger) {
            handler.protect_dir(dir);
        }
        handler.add_temp_path(path.clone());
        let text = TempResource::encode_path(&path);
        let pid = i64::from(self.pid());
        let me = self.participant_id().clone();
        // Boxed: a store write's future is large, and a caller that registers its paths
        // before starting a worker keeps its own future for as long as the worker runs.
        Box::pin(self.shared.modify(|data, now| {
            core::temps::register(data, &text, pid, &me, now);
            Ok(())
        }))
        .await?;
        Ok(())
    }

    /// Delete this participant's temp resources now, from what it registered itself, and
    /// forget them locally; the ledger is not touched. For a process that exits with a
    /// ledger it cannot write (or at once on a second signal): the paths it registered
    /// are proof enough that they are its own. Returns how many paths it took.
    pub fn delete_local_temp_resources(&self) -> usize {
        let temps: Vec<_> = std::mem::take(&mut self.shared.local().temps)
            .into_iter()
            .collect();
        let protected = super::temps::protected(&self.shared.ledger);
        for path in &temps {
            let outcome = crate::temp_path::remove(path, &protected);
            if let Some(line) = outcome.report(path) {
                tracing::warn!(operation = %self.shared.id, "{line}");
            }
            CleanupHandler::global().remove_temp_path(path);
        }
        temps.len()
    }

    /// Forget a temp resource (locally and in the ledger) without deleting it.
    pub async fn unregister_temp_resource(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = crate::temp_path::normalise(path.as_ref())?;
        self.shared.local().temps.remove(&path);
        CleanupHandler::global().remove_temp_path(&path);
        let text = TempResource::encode_path(&path);
        // Boxed, like the registration's write.
        Box::pin(self.shared.modify(|data, _| {
            core::temps::unregister(data, &text);
            Ok(())
        }))
        .await?;
        Ok(())
    }

    /// The temp resources this participant registered and still holds.
    pub fn local_temp_resources(&self) -> Vec<PathBuf> {
        self.shared.local().temps.iter().cloned().collect()
    }

    // ----- end of participation -----

    /// Leave the operation for this session. With pending calls it fails unless
    /// `cancel_pending_calls`, which cancels spawned calls (their workers are stopped) and
    /// cancels open regular calls (their `on_cleanup` runs; a later `end` or `fail` of
    /// them is refused with `Cancelled`).
    /// When the last session leaves, the heartbeat stops and the participant is recorded
    /// as having left.
    pub async fn leave(&self, cancel_pending_calls: bool) -> Result<()> {
        let shared = &self.shared;
        if !shared.local().sessions.contains_key(&self.session) {
            return Err(Error::SessionClosed {
                operation: shared.id.clone(),
                session: self.session,
            });
        }
        super::call::settle_decided(shared).await;
        let pending: Vec<CallId> = {
            let mut p = self.pending_calls();
            p.extend(self.pending_spawned_calls());
            p
        };
        if !pending.is_empty() {
            if !cancel_pending_calls {
                return Err(Error::PendingCalls {
                    operation: shared.id.clone(),
                    session: self.session,
                    calls: join_ids(&pending),
                });
            }
            super::call::cancel_calls(shared, &pending, "session left").await;
        }
        let last = {
            let mut local = shared.local();
            local.sessions.remove(&self.session);
            local.sessions.is_empty()
        };
        if last {
            // A cleanup this participant coordinates ends with the archive: finish it.
            shared.finish_coordination().await;
            shared.stop_tasks();
            let me = self.participant_id().clone();
            let result = shared
                .modify(|data, now| {
                    core::registry::leave(data, &me, now);
                    Ok(())
                })
                .await;
            if result.is_ok() {
                shared
                    .log_quietly(
                        LogLevel::Info,
                        &format!("PARTICIPANT_LEFT participant={me}"),
                    )
                    .await;
            }
            shared.ledger.forget(&shared.id);
        }
        Ok(())
    }

    /// Complete the operation (initiator only) and archive it. Refused with
    /// `Error::RunningCalls` while calls of this participant are unfinished (regular
    /// calls, spawned calls, exec workers: a worker never outlives its operation), and
    /// with `Error::OpenCalls` while other participants still hold call frames.
    pub async fn complete(&self) -> Result<()> {
        self.complete_inner(false, false).await
    }

    /// Like [`Operation::complete`], but first cancels this participant's unfinished calls
    /// (exec workers are stopped through the stop ladder and waited for; regular calls
    /// fail as cancelled and run `on_cleanup`). Still refused while other participants
    /// hold frames.
    pub async fn complete_cancelling(&self) -> Result<()> {
        self.complete_inner(false, true).await
    }

    /// Complete even while other participants hold frames; this participant's own
    /// unfinished calls are cancelled first, as by [`Operation::complete_cancelling`].
    pub async fn force_complete(&self) -> Result<()> {
        self.complete_inner(true, true).await
    }

    async fn complete_inner(&self, force: bool, cancel_own: bool) -> Result<()> {
        let shared = &self.shared;
        if !shared.is_initiator {
            return Err(Error::NotInitiator {
                operation: shared.id.clone(),
                action: "complete",
            });
        }
        super::call::settle_decided(shared).await;
        let own = own_calls(shared);
        if !own.is_empty() {
            if !cancel_own {
                return Err(Error::RunningCalls {
                    operation: shared.id.clone(),
                    calls: join_ids(&own),
                });
            }
            super::call::cancel_calls(shared, &own, "operation completed").await;
        }
        let me = self.participant_id().clone();
        shared
            .modify(|data, _| {
                // A call started while the others were being cancelled is refused too.
                core::registry::complete(data, &me, &own_calls(shared), force)
            })
            .await?;
        shared.stop_tasks();
        for path in std::mem::take(&mut shared.local().temps) {
            CleanupHandler::global().remove_temp_path(&path);
        }
        shared
            .log_quietly(LogLevel::Info, "OPERATION_COMPLETED")
            .await;
        let location = shared.ledger.store.archive(&shared.id).await?;
        if let Some(f) = &shared.ledger.callback.on_backup_created {
            super::panic::call_quietly("on_backup_created", || f(location.location()));
        }
        shared.ledger.forget(&shared.id);
        Ok(())
    }
}

/// Unfinished calls of this participant in this operation, in every session.
fn own_calls(shared: &OpShared) -> Vec<CallId> {
    let mut ids: Vec<CallId> = shared.local().calls.keys().cloned().collect();
    ids.sort();
    ids
}
