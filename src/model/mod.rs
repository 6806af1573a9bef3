//! The ledger's data: what one operation file holds.
//!
//! Field names and enum spellings are the original's, so tools of both can read each
//! other's ledgers; fields we added are ignored by readers of the original. Reading
//! accepts the original's quirks: local timestamps without offset, the legacy `stack`
//! key, and missing fields with the original's defaults.

mod frame_change;
pub mod participants;
mod temp_resource;
pub mod time;

pub use frame_change::{FrameChange, FrameStep};
pub use participants::{LEFT_HISTORY, LeftParticipant};

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ids::{CallId, OperationId, ParticipantId};

pub use temp_resource::{NON_UTF8_PREFIX, TempResource};

/// State of the whole operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OperationState {
    #[default]
    Running,
    /// A failure was detected; participants are cleaning up.
    Cleanup,
    Failed,
    Completed,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Running => "running",
            OperationState::Cleanup => "cleanup",
            OperationState::Failed => "failed",
            OperationState::Completed => "completed",
        }
    }

    /// Failed or completed: nothing more happens to the operation.
    pub fn is_final(self) -> bool {
        matches!(self, OperationState::Failed | OperationState::Completed)
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of a call frame during crash handling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FrameState {
    #[default]
    Active,
    /// The participant owning the frame was found dead.
    Crashed,
    /// The frame's owner coordinates the cleanup.
    CleaningUp,
    /// The owner finished its own cleanup.
    CleanedUp,
}

/// State of a participant in the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ParticipantState {
    #[default]
    Active,
    /// Left the operation in order.
    Left,
    /// Found dead; its writes are fenced.
    Crashed,
}

/// Log levels of the operation log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warning,
    Error,
}

/// A line of the operation log: `{RFC3339 UTC} [LEVEL] message`.
pub fn log_line(now: &Timestamp, level: LogLevel, message: &str) -> String {
    format!("{} [{level}] {message}", time::format(now))
}

impl LogLevel {
    /// The spelling in log lines: `DEBUG`, `INFO`, `WARNING`, `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OS process behind an exec worker, enough to find it again safely after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRecord {
    pub pid: i32,
    /// The process group the worker leads (its whole tree).
    pub pgid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22); with the boot id it
    /// tells a live worker from a process that reused its pid.
    pub start_ticks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Inode of the PID namespace the pids were read in: they mean nothing elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
    pub command: Vec<String>,
    /// The cgroup the worker runs in, in escape-proof mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// A call in progress, recorded while it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallFrame {
    pub participant_id: ParticipantId,
    pub call_id: CallId,
    /// Pid of the participant that owns the frame (not of a worker; see `process`).
    pub pid: i64,
    #[serde(with = "time")]
    pub start_time: Timestamp,
    #[serde(with = "time", default = "time::now")]
    pub last_heartbeat: Timestamp,
    #[serde(default)]
    pub state: FrameState,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default = "yes")]
    pub fail_on_crash: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_call_id: Option<CallId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
}

fn yes() -> bool {
    true
}

/// A process taking part in the operation, with its own heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub pid: i32,
    /// Process start time in clock ticks since boot, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Inode of the participant's PID namespace: its pid is checked only from the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
    /// The participant's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Registration epoch: a write carrying an older epoch is fenced.
    pub epoch: u64,
    #[serde(with = "time")]
    pub last_heartbeat: Timestamp,
    #[serde(with = "time")]
    pub joined_at: Timestamp,
    #[serde(default)]
    pub state: ParticipantState,
    /// The call of another participant whose exec worker started this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawned_by: Option<CallId>,
    /// Set while the participant is stopped by job control (Ctrl+Z), from when it
    /// stopped: peers do not judge it by heartbeat age meanwhile (see `presence`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::option"
    )]
    pub paused_at: Option<Timestamp>,
}

/// Why an operation failed, recorded when it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    pub reason: String,
    #[serde(default)]
    pub crashed_call_ids: Vec<CallId>,
    #[serde(default)]
    pub crashed_participants: Vec<ParticipantId>,
    /// Who coordinates (or coordinated) the cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<ParticipantId>,
}

/// One operation: the content of `{op}.operation.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerData {
    pub operation_id: OperationId,
    /// Modification counter, bumped by the store on every write; numbers the trail.
    /// Written right after the id, so that a reader learns the revision from the head
    /// of the file (see `FileStore::current_revision`).
    #[serde(default)]
    pub seq: u64,
    #[serde(default = "unknown_participant")]
    pub initiator_id: ParticipantId,
    #[serde(with = "time", default = "time::now")]
    pub start_time: Timestamp,
    #[serde(default, deserialize_with = "null_as_default")]
    pub operation_state: OperationState,
    #[serde(default)]
    pub aborted: bool,
    #[serde(with = "time", default = "time::now")]
    pub last_heartbeat: Timestamp,
    #[serde(default)]
    pub call_frames: Vec<CallFrame>,
    #[serde(default)]
    pub temp_resources: Vec<TempResource>,
    #[serde(with = "time::option", default)]
    pub detection_timestamp: Option<Timestamp>,
    #[serde(with = "time::option", default)]
    pub removal_timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub participants: BTreeMap<ParticipantId, Participant>,
    /// Next registration epoch to hand out.
    #[serde(default)]
    pub next_epoch: u64,
    /// Participants that left in order and were dropped from `participants`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub participants_left: u64,
    /// The latest of them, oldest first (at most [`LEFT_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recently_left: Vec<LeftParticipant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureRecord>,
    /// The original's name for `callFrames`, read only when `callFrames` is absent.
    #[serde(default, rename = "stack", skip_serializing)]
    legacy_stack: Option<Vec<CallFrame>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn unknown_participant() -> ParticipantId {
    ParticipantId::parse("unknown").expect("valid literal id")
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl LedgerData {
    /// A fresh running operation.
    pub fn new(operation_id: OperationId, initiator_id: ParticipantId, now: Timestamp) -> Self {
        Self {
            operation_id,
            initiator_id,
            start_time: now,
            operation_state: OperationState::Running,
            aborted: false,
            last_heartbeat: now,
            call_frames: Vec::new(),
            temp_resources: Vec::new(),
            detection_timestamp: None,
            removal_timestamp: None,
            description: None,
            seq: 0,
            participants: BTreeMap::new(),
            next_epoch: 1,
            participants_left: 0,
            recently_left: Vec::new(),
            failure: None,
            legacy_stack: None,
        }
    }

    /// Parse an operation file, ours or the original's.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        let mut data: LedgerData = serde_json::from_slice(bytes)?;
        if let Some(stack) = data.legacy_stack.take()
            && data.call_frames.is_empty()
        {
            data.call_frames = stack;
        }
        Ok(data)
    }

    /// Pretty JSON (2-space indent), as the original wrote it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out)
            .expect("ledger data always serialises");
        out
    }

    /// [`to_json`](Self::to_json) streamed into `out` (a large operation written straight
    /// into its file, never held whole in memory).
    pub fn write_json(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut out, self)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// True when no call frames and no temp resources are left.
    pub fn is_empty(&self) -> bool {
        self.call_frames.is_empty() && self.temp_resources.is_empty()
    }

    pub fn frame(&self, call: &CallId) -> Option<&CallFrame> {
        self.call_frames.iter().rev().find(|f| &f.call_id == call)
    }

    pub fn frame_mut(&mut self, call: &CallId) -> Option<&mut CallFrame> {
        self.call_frames
            .iter_mut()
            .rev()
            .find(|f| &f.call_id == call)
    }

    /// Remove the last frame with this call id (duplicates are tolerated, as before).
    pub fn remove_frame(&mut self, call: &CallId) -> Option<CallFrame> {
        let idx = self.call_frames.iter().rposition(|f| &f.call_id == call)?;
        Some(self.call_frames.remove(idx))
    }
}

#[cfg(test)]
mod tests;
