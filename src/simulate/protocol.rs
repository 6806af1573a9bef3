//! What the runner and a participant process say to each other: commands as JSON lines
//! on the participant's stdin, events as JSON lines on its stdout. Every event carries
//! the wall-clock time it happened (`at`, Unix nanoseconds), so observations of
//! different processes can be put in order.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A command to a participant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open a call.
    Start(StartCall),
    /// End a call (a responder's call writes its answer first).
    End { call: String },
    /// Fail a call with this message (a responder's call answers with the error first).
    Fail { call: String, message: String },
    /// Leave the operation in order and exit (a participant that did not create it).
    Leave,
    /// Complete the operation and exit (the initiator).
    Complete,
}

/// Open a call named `call`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartCall {
    pub call: String,
    /// The call id of the call this one is nested in (another participant's, usually).
    pub parent: Option<String>,
    /// Files to create and register as the operation's temp resources.
    pub temps: Vec<PathBuf>,
    pub fail_on_crash: bool,
    /// Participants whose calls run inside this one: when one of them is declared
    /// crashed, this call fails (the caller sees its callee die).
    pub callees: Vec<String>,
    /// Report `cleanup` from this call's `on_cleanup` and then hold there (a fault is
    /// injected at that point).
    pub hold_cleanup: bool,
    /// This call answers through this file (the original's Copilot response file).
    pub respond_file: Option<PathBuf>,
    /// This call waits for an answer in this file, up to `deadline_ms`.
    pub await_response: Option<AwaitResponse>,
}

/// Wait for an external answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AwaitResponse {
    pub file: PathBuf,
    pub deadline_ms: u64,
}

/// What a participant reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Joined (or created) the operation; its first heartbeat has landed.
    Ready {
        participant: String,
        operation: String,
        pid: i32,
        at: u64,
    },
    /// A call's frame is open.
    Started {
        call: String,
        call_id: String,
        at: u64,
    },
    /// A call ended successfully.
    Ended { call: String, at: u64 },
    /// A call failed (by command, by an error answer, a deadline or a callee's crash).
    CallFailed {
        call: String,
        message: String,
        at: u64,
    },
    /// An external answer arrived for this call.
    Answered { call: String, at: u64 },
    /// An external answer did not arrive before the deadline.
    TimedOut { call: String, at: u64 },
    /// A callee of this call was declared crashed.
    Detected {
        call: String,
        participant: String,
        at: u64,
    },
    /// The call's `on_cleanup` runs (and holds, when asked to).
    Cleanup { call: String, at: u64 },
    /// `failed()` resolved.
    Failed { reason: String, at: u64 },
    /// `aborted()` resolved.
    Aborted { at: u64 },
    /// The signal handler started its cleanup (the initiator, after a SIGINT).
    Interrupted { signal: String, at: u64 },
    /// The operation is gone from under this participant, or it was fenced out.
    Gone { why: String, at: u64 },
    /// A command could not be carried out.
    Error { message: String, at: u64 },
    /// The process is about to exit with this code.
    Exit { code: i32, at: u64 },
}

impl Event {
    /// When it happened (Unix nanoseconds).
    pub fn at(&self) -> u64 {
        match self {
            Event::Ready { at, .. }
            | Event::Started { at, .. }
            | Event::Ended { at, .. }
            | Event::CallFailed { at, .. }
            | Event::Answered { at, .. }
            | Event::TimedOut { at, .. }
            | Event::Detected { at, .. }
            | Event::Cleanup { at, .. }
            | Event::Failed { at, .. }
            | Event::Aborted { at }
            | Event::Interrupted { at, .. }
            | Event::Gone { at, .. }
            | Event::Error { at, .. }
            | Event::Exit { at, .. } => *at,
        }
    }
}

/// Now, as Unix nanoseconds (the `at` of events and faults).
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An answer written to a response file (`{"answer": ..}` or `{"error": ..}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Answer(String),
    Error(String),
}
