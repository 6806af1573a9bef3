//! Participant heartbeats.
//!
//! Every participant beats (not only its frames), so a participant with no open call is
//! still visible. The first beat happens at once, then every interval plus a random jitter.
//! A beat refreshes the participant's registry entry and its frames, and reports the age
//! of every other participant against the one stale threshold. Beats are written as
//! refreshes: the file store keeps no trail entry for them.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::clock::age_ms;
use crate::error::{Error, Result};
use crate::ids::ParticipantId;
use crate::model::{LedgerData, OperationState, ParticipantState};

use super::callbacks::OperationCallback;
use super::operation::Operation;
use super::shared::{OpShared, spawn};

/// Kinds of heartbeat failure (the original's, plus `Fenced`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeartbeatErrorType {
    LedgerNotFound,
    LockFailed,
    AbortFlagSet,
    HeartbeatStale,
    IoError,
    /// This participant was declared crashed; it must stop.
    Fenced,
}

/// A failed or alarming heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatError {
    pub kind: HeartbeatErrorType,
    pub message: String,
    pub cause: Option<String>,
}

impl std::fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeartbeatError({:?}): {}", self.kind, self.message)
    }
}

/// What one heartbeat saw.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatResult {
    pub abort_flag: bool,
    pub ledger_exists: bool,
    pub heartbeat_updated: bool,
    pub call_frame_count: usize,
    pub temp_resource_count: usize,
    /// Age of the operation's global heartbeat before this beat.
    pub heartbeat_age_ms: u64,
    /// Whether any other participant is stale.
    pub is_stale: bool,
    /// Every active participant, registered or only seen in frames.
    pub participants: Vec<ParticipantId>,
    pub participant_heartbeat_ages: BTreeMap<ParticipantId, u64>,
    /// Other participants whose heartbeat is older than the threshold.
    pub stale_participants: Vec<ParticipantId>,
    pub data_before: Option<LedgerData>,
    pub data_after: Option<LedgerData>,
}

impl HeartbeatResult {
    pub fn has_stale_children(&self) -> bool {
        !self.stale_participants.is_empty()
    }
}

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
    let mut before = None;
    let after = shared
        .refresh(|data, now| {
            before = Some(data.clone());
            super::core::frames::beat(data, &me, now);
            Ok(())
        })
        .await?;
    let before = before.expect("change ran");
    let now = shared.now();
    let threshold = shared.local().stale_threshold.as_millis() as u64;
    let mut ages = BTreeMap::new();
    for (id, p) in &after.participants {
        if p.state == ParticipantState::Active {
            ages.insert(id.clone(), age_ms(now, p.last_heartbeat));
        }
    }
    for frame in &after.call_frames {
        if !after.participants.contains_key(&frame.participant_id) {
            let age = age_ms(now, frame.last_heartbeat);
            ages.entry(frame.participant_id.clone())
                .and_modify(|a: &mut u64| *a = (*a).min(age))
                .or_insert(age);
        }
    }
    // A participant paused by job control is judged by pid (here) or excused for a
    // bounded time (elsewhere), not by the age of its last beat.
    let paused = |id: &ParticipantId| {
        after
            .participants
            .get(id)
            .is_some_and(|p| super::liveness::pause_excuses(p, &shared.ledger))
    };
    let stale: Vec<ParticipantId> = ages
        .iter()
        .filter(|(id, age)| **id != me && **age > threshold && !paused(id))
        .map(|(id, _)| id.clone())
        .collect();
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
                    super::crash::check_stale(shared, data, &result.stale_participants).await;
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

/// Start (or restart) the heartbeat task of this participant in this operation.
pub(crate) fn start(shared: &Arc<OpShared>, options: HeartbeatOptions) {
    let weak: Weak<OpShared> = Arc::downgrade(shared);
    let task = spawn(async move {
        loop {
            let Some(shared) = weak.upgrade() else { break };
            if !beat_and_report(&shared).await {
                break;
            }
            drop(shared);
            let jitter_ms = options.jitter.as_millis() as u64;
            let jitter = if jitter_ms == 0 {
                0
            } else {
                rand::random_range(0..=jitter_ms)
            };
            tokio::time::sleep(options.interval + Duration::from_millis(jitter)).await;
        }
    });
    let mut local = shared.local();
    if let Some(old) = local.heartbeat.replace(task) {
        old.abort();
    }
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
        if let Some(h) = self.shared.local().heartbeat.take() {
            h.abort();
        }
    }

    /// Beat once now.
    pub async fn heartbeat(&self) -> Result<HeartbeatResult> {
        beat(&self.shared).await
    }
}
