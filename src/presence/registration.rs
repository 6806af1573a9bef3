//! A registration that keeps itself alive: the heartbeat task of one participant in one
//! operation, and what a beat reports.
//!
//! The task only keeps time (first beat at once, then every interval plus a random
//! jitter); what a beat writes is the caller's (the ledger's fenced refresh of the
//! participant's heartbeat field). It ends when a beat says so, when it is stopped, or
//! when the [`Registration`] is dropped.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::ids::ParticipantId;
use crate::model::LedgerData;

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

/// When a registration beats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeatSchedule {
    pub interval: Duration,
    /// Up to this much random delay is added to every interval.
    pub jitter: Duration,
}

impl BeatSchedule {
    /// The wait before the next beat: the interval plus a random share of the jitter.
    pub fn next_wait(&self) -> Duration {
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let jitter = if jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ms)
        };
        self.interval.saturating_add(Duration::from_millis(jitter))
    }
}

/// One beat; resolves to whether the registration should keep beating.
pub type BeatFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// A participant kept alive by its own task. Dropping it stops the beats.
#[derive(Debug)]
pub struct Registration {
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// Beat at once, then on `schedule`, until `beat` resolves to false. Must be called
    /// within a tokio runtime.
    pub fn keep_alive(
        schedule: BeatSchedule,
        mut beat: impl FnMut() -> BeatFuture + Send + 'static,
    ) -> Self {
        let task = tokio::spawn(async move {
            while beat().await {
                tokio::time::sleep(schedule.next_wait()).await;
            }
        });
        Self { task: Some(task) }
    }

    /// Stop beating. The task is returned for callers that must know no beat of theirs
    /// is still in flight (a beat already inside the store finishes before it ends).
    pub fn stop(mut self) -> Option<JoinHandle<()>> {
        let task = self.task.take();
        if let Some(task) = &task {
            task.abort();
        }
        task
    }

    /// Whether the beats have ended (a beat said so, or the task was stopped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
