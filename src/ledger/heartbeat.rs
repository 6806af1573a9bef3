//! What a participant's beat writes and whom it tells.
//!
//! Every participant beats (not only its frames), so a participant with no open call is
//! still visible. The presence registration keeps the time (`presence::Registration`);
//! a beat here is this participant's fenced refresh of its registry entry and its frames,
//! the ages of the others as presence judges them, and the callbacks. Beats are written
//! as refreshes: the file store keeps no trail entry for them. Stale participants are
//! handed to presence as expired, whose stream the crash declaration follows.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::age_ms;
use crate::error::{Error, Result};
use crate::model::LedgerData;
use crate::model::OperationState;
use crate::presence::{
    Ages, BeatFuture, BeatSchedule, HeartbeatError, HeartbeatErrorType, HeartbeatResult, KeepAlive,
    Registration,
};

use super::callbacks::OperationCallback;
use super::operation::Operation;
use super::shared::OpShared;

/// Heartbeat settings for `start_heartbeat`.
#[derive(Clone)]
pub struct HeartbeatOptions {
    pub interval: Duration,
    /// Up to this much random delay is added to every interval.
    pub jitter: Duration,
    pub callback: OperationCallback,
}

/// One beat: refresh this participant and its frames, judge the others.
pub(crate) async fn beat(shared: &Arc<OpShared>) -> Result<HeartbeatResult> {
    let me = shared.ledger.config.participant.clone();
    let (before, after) = match shared
        .ledger
        .presence
        .keep_alive(&shared.id, &me, shared.epoch)
    {
        Some(kept) => kept_alive(shared, kept).await?,
        None => {
            let mut before = None;
            let after = shared
                .refresh(|data, now| {
                    before = Some(data.clone());
                    super::core::frames::beat(data, &me, now);
                    Ok(())
                })
                .await?;
            (before.expect("change ran"), after)
        }
    };
    let now = shared.now();
    // Judged outside the local lock: a paused local peer is judged by reading /proc.
    let Ages { ages, stale } = shared.ledger.presence.ages(&after, &me);
    let stale = if stale.is_empty() {
        stale
    } else {
        shared.ledger.presence.confirm_stale(&after, stale).await
    };
    Ok(HeartbeatResult {
        abort_flag: after.aborted,
        ledger_exists: true,
        heartbeat_updated: true,
        call_frame_count: after.call_frames.len(),
        temp_resource_count: after.temp_resources.len(),
        heartbeat_age_ms: age_ms(now, before.last_heartbeat),
        is_stale: !stale.is_empty(),
        participants: ages.keys().cloned().collect(),
        participant_heartbeat_ages: ages,
        stale_participants: stale,
        data_before: Some(before),
        data_after: Some(after),
    })
}

/// A beat the presence backend keeps beside the document (a server): the document is
/// only read. A fenced participant takes in the operation as it is, which fences it
/// here too (its workers are stopped).
async fn kept_alive(shared: &Arc<OpShared>, kept: KeepAlive) -> Result<(LedgerData, LedgerData)> {
    let before = shared.local().cached.clone();
    match kept.await {
        Ok(after) => {
            shared.observe(&after);
            let before = before.map_or_else(|| after.clone(), Arc::unwrap_or_clone);
            Ok((before, after))
        }
        Err(e @ Error::Fenced { .. }) => {
            if let Ok(data) = shared.ledger.store.read(&shared.id).await {
                shared.observe(&data);
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Beat once and tell the callbacks. Returns false when the heartbeat should stop.
pub(crate) async fn beat_and_report(shared: &Arc<OpShared>) -> bool {
    let callback = shared.local().heartbeat_callback.clone();
    let op = shared.internal_handle();
    match beat(shared).await {
        Ok(result) => {
            if result.abort_flag {
                report_error(
                    shared,
                    &op,
                    &callback,
                    HeartbeatErrorType::AbortFlagSet,
                    "abort flag is set".into(),
                    None,
                );
            } else if result.has_stale_children() {
                let names: Vec<&str> = result
                    .stale_participants
                    .iter()
                    .map(|p| p.as_str())
                    .collect();
                let message = format!("stale heartbeat detected from: {}", names.join(", "));
                report_error(
                    shared,
                    &op,
                    &callback,
                    HeartbeatErrorType::HeartbeatStale,
                    message,
                    None,
                );
                if let Some(data) = &result.data_after {
                    shared
                        .local()
                        .roster
                        .expire_stale(data, &result.stale_participants);
                }
            } else if let Some(f) = &callback.on_heartbeat_success {
                super::panic::call_quietly("on_heartbeat_success", || f(&op, &result));
            }
            let state = result.data_after.as_ref().map(|d| d.operation_state);
            !matches!(
                state,
                Some(OperationState::Completed | OperationState::Failed)
            )
        }
        Err(e) => {
            let (kind, keep_going) = match &e {
                Error::OperationNotFound(_) => (HeartbeatErrorType::LedgerNotFound, false),
                Error::OperationEnded { .. } => return false,
                Error::Fenced { .. } => (HeartbeatErrorType::Fenced, false),
                Error::LockTimeout { .. } => (HeartbeatErrorType::LockFailed, true),
                _ => (HeartbeatErrorType::IoError, true),
            };
            report_error(
                shared,
                &op,
                &callback,
                kind,
                format!("heartbeat failed: {e}"),
                Some(e.to_string()),
            );
            keep_going
        }
    }
}

fn report_error(
    shared: &OpShared,
    op: &Operation,
    callback: &OperationCallback,
    kind: HeartbeatErrorType,
    message: String,
    cause: Option<String>,
) {
    let error = HeartbeatError {
        kind,
        message,
        cause,
    };
    if let Some(f) = &callback.on_heartbeat_error {
        super::panic::call_quietly("on_heartbeat_error", || f(op, &error));
    }
    if let Some(f) = &shared.ledger.callback.on_global_heartbeat_error {
        super::panic::call_quietly("on_global_heartbeat_error", || f(&shared.id, &error));
    }
}

/// Start (or restart) the heartbeat registration of this participant in this operation.
pub(crate) fn start(shared: &Arc<OpShared>, options: HeartbeatOptions) {
    let weak: Weak<OpShared> = Arc::downgrade(shared);
    let schedule = BeatSchedule {
        interval: options.interval,
        jitter: options.jitter,
    };
    let registration = Registration::keep_alive(schedule, move || -> BeatFuture {
        let weak = weak.clone();
        Box::pin(async move {
            match weak.upgrade() {
                Some(shared) => beat_and_report(&shared).await,
                None => false,
            }
        })
    });
    // The old registration (if any) stops as it is dropped.
    shared.local().heartbeat = Some(registration);
}

impl Operation {
    /// Start or restart the heartbeat with new settings and callbacks. Heartbeats start on
    /// their own with `create_operation` / `join_operation`.
    pub fn start_heartbeat(&self, options: HeartbeatOptions) {
        self.shared.local().heartbeat_callback = options.callback.clone();
        start(&self.shared, options);
    }

    /// Stop this participant's heartbeat in this operation.
    pub fn stop_heartbeat(&self) {
        if let Some(registration) = self.shared.local().heartbeat.take() {
            registration.stop();
        }
    }

    /// Beat once now.
    pub async fn heartbeat(&self) -> Result<HeartbeatResult> {
        beat(&self.shared).await
    }
}
