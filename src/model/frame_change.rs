//! A participant's change of its own call frames, described as data: what a call's start
//! or end writes. The ledger runs it as a change on its side (`ledger/core/frames.rs`
//! applies it); a backend that can apply it under its own lock (a ledger server) is sent
//! the description instead, so that writers of one operation never refuse each other.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ids::{CallId, ParticipantId};

use super::CallFrame;

/// A frame change with the writer's fencing facts: refused unless `participant` is still
/// an active participant at `epoch`; `at` is its heartbeat (the writer's clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrameChange {
    pub participant: ParticipantId,
    pub epoch: u64,
    #[serde(with = "super::time")]
    pub at: Timestamp,
    pub step: FrameStep,
}

/// What happens to the writer's frames.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum FrameStep {
    /// A call starts: its frame is written (only while the operation runs).
    Open(Box<CallFrame>),
    /// A call ended, failed or was cancelled: its frame is removed.
    Close(CallId),
}
