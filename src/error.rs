//! The one error type of the crate.
//!
//! Messages are lowercase, carry the offending value in backticks, and fit on one line so
//! the CLI can print them as they are.

use std::path::PathBuf;

use crate::ids::{CallId, OperationId, ParticipantId};
use crate::revision::Revision;

/// Everything that can go wrong in the ledger, the store or the process layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An id from outside (CLI, HTTP, environment, a ledger file) failed validation.
    #[error("invalid {kind} id `{value}`: {reason}")]
    InvalidId {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("operation `{0}` not found")]
    OperationNotFound(OperationId),

    #[error("operation `{0}` already exists")]
    OperationExists(OperationId),

    /// A compare-and-swap found the operation at another revision than the one it was
    /// read at: another writer came first. Read-change-write retries on it.
    #[error(
        "operation `{operation}` changed meanwhile: expected revision {expected}, found {found}"
    )]
    Conflict {
        operation: OperationId,
        expected: Revision,
        found: Revision,
    },

    /// The ledger's backend cannot be reached (a server or cluster that does not answer).
    #[error("ledger `{location}` is unavailable: {reason}")]
    Unavailable { location: String, reason: String },

    /// A ledger server refused a request (a wrong token, a request it calls invalid, its
    /// own failure); the message is the server's.
    #[error("ledger server `{location}` answered {status}: {message}")]
    ServerRefused {
        location: String,
        status: u16,
        message: String,
    },

    /// The operation has ended (completed or failed) and takes no more changes.
    #[error("operation `{operation}` is {state}")]
    OperationEnded {
        operation: OperationId,
        state: String,
    },

    /// A ledger file that is not valid: the path and what the parser said.
    #[error("corrupt ledger file `{path}`: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// An entry of the ledger directory the store did not create: a symlink, something
    /// other than what the store makes there, or another user's. Never used.
    #[error("refusing {what} `{path}`: it is {found}")]
    UntrustedEntry {
        what: &'static str,
        path: PathBuf,
        found: String,
    },

    /// A ledger directory that others could have written: another user's, or writable by
    /// group or others. The message says how to fix it.
    #[error("ledger directory `{path}` {problem}: {fix}")]
    UntrustedLedgerDir {
        path: PathBuf,
        problem: String,
        fix: String,
    },

    #[error("{action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A queued write of this participant was dropped unanswered (its runtime is shutting
    /// down): whether it was written is unknown.
    #[error("the write to operation `{operation}` was dropped before it was answered")]
    WriteDropped { operation: OperationId },

    /// The participant was declared crashed; its writes are refused from now on.
    #[error("participant `{participant}` is fenced out of operation `{operation}` (epoch {epoch})")]
    Fenced {
        operation: OperationId,
        participant: ParticipantId,
        epoch: u64,
    },

    /// A join under an id that a different live process holds.
    #[error(
        "participant id `{participant}` is already held by live process {pid} in operation `{operation}`"
    )]
    ParticipantInUse {
        operation: OperationId,
        participant: ParticipantId,
        pid: i32,
    },

    #[error("only the initiator can {action} operation `{operation}`")]
    NotInitiator {
        operation: OperationId,
        action: &'static str,
    },

    /// `complete` while other participants still hold frames.
    #[error("operation `{operation}` still has open calls of other participants: {calls}")]
    OpenCalls {
        operation: OperationId,
        calls: String,
    },

    /// `complete` while calls of the completing participant itself are unfinished.
    #[error(
        "operation `{operation}` still has running calls of its initiator: {calls} (end or cancel them, or use complete_cancelling)"
    )]
    RunningCalls {
        operation: OperationId,
        calls: String,
    },

    #[error("session {session} of operation `{operation}` has pending calls: {calls}")]
    PendingCalls {
        operation: OperationId,
        session: u64,
        calls: String,
    },

    #[error("session {session} of operation `{operation}` is not active")]
    SessionClosed {
        operation: OperationId,
        session: u64,
    },

    #[error("call `{0}` has already completed")]
    CallCompleted(CallId),

    /// A call named from outside (a request of a remote client) that has no frame in the
    /// operation.
    #[error("call `{call}` has no frame in operation `{operation}`")]
    CallNotFound {
        operation: OperationId,
        call: CallId,
    },

    /// A frame asked for under a call id the operation already has a frame for.
    #[error("call `{call}` already has a frame in operation `{operation}`")]
    CallExists {
        operation: OperationId,
        call: CallId,
    },

    #[error("call `{0}` is not finished yet")]
    CallPending(CallId),

    /// The work of a call failed; `cause` is its own error, kept typed (a worker's
    /// [`Error::Timeout`], [`Error::WorkerFailed`] with its exit status, ...).
    #[error("call `{call}` failed: {cause}")]
    CallFailed {
        call: CallId,
        cause: std::sync::Arc<Error>,
    },

    /// The work of a call failed with an error of its own type, kept as its message.
    #[error("{0}")]
    WorkFailed(String),

    /// The work of a call panicked.
    #[error("panicked: {0}")]
    Panicked(String),

    /// A callback of a call panicked (`on_completion`, `on_cleanup`, `on_call_crashed`),
    /// after the call's own failure if it had one.
    #[error("{}{callback} panicked: {message}", after_suffix(.after))]
    CallbackPanicked {
        callback: &'static str,
        message: String,
        after: Option<std::sync::Arc<Error>>,
    },

    /// A worker failed and participants it started died without leaving (a nested
    /// `tom-ledger exec`, say): their crash is part of the failure.
    #[error("{error}; participant {} started by this call crashed", participant_list(.participants))]
    StartedParticipantsCrashed {
        error: Box<Error>,
        participants: Vec<ParticipantId>,
    },

    /// Work run through `wait_for_completion` failed; the message is the work's own.
    #[error("work failed: {0}")]
    Work(String),

    #[error("call `{0}` was cancelled")]
    Cancelled(CallId),

    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },

    /// Another writer held the operation's lock for longer than the configured bound
    /// (it may be stopped or hung); `holder` is its pid when the system says.
    #[error("timed out after {after:?} waiting for the lock `{path}`{}", holder_suffix(.holder))]
    LockTimeout {
        path: PathBuf,
        after: std::time::Duration,
        holder: Option<i32>,
    },

    #[error("operation `{operation}` failed: {reason}")]
    OperationFailed {
        operation: OperationId,
        reason: String,
    },

    #[error("operation `{0}` was aborted")]
    Aborted(OperationId),

    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A worker ended unsuccessfully; `stderr` holds the last lines it wrote there.
    #[error("worker `{program}` {status}{}", stderr_suffix(.stderr))]
    WorkerFailed {
        program: String,
        /// How it ended, in words ("exited with code 3", "was killed by SIGKILL").
        status: String,
        exit: std::process::ExitStatus,
        stderr: String,
    },

    /// A file-result worker exited 0 without writing its result file.
    #[error(
        "worker `{program}` exited with code 0 without writing its result file `{}`{}",
        .path.display(), stderr_suffix(.stderr)
    )]
    ResultFileMissing {
        program: String,
        path: PathBuf,
        stderr: String,
    },

    #[error("worker `{program}` wrote more than {limit} bytes to stdout")]
    OutputTooLarge { program: String, limit: usize },

    /// A worker was stopped before it finished (cancelled, aborted, supervisor shutdown);
    /// the ledger maps this to the call the worker ran for.
    #[error("worker `{program}` was stopped: {reason}")]
    WorkerStopped {
        program: String,
        reason: crate::stop_reason::StopReason,
    },

    #[error("cannot decode result of call `{call}`: {reason}")]
    Decode { call: CallId, reason: String },

    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },

    #[error("system call {call} failed: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: nix::Error,
    },

    /// A temp resource that must never be deleted: `/`, the home directory, a mount
    /// point, the ledger directory (or anything in it), or an ancestor of them (refused at registration and
    /// again at deletion).
    #[error("refusing temp resource `{path}`: {reason}")]
    TempPathRefused { path: PathBuf, reason: String },

    /// A scenario file of the simulator that cannot be used, at `file:line:column`.
    #[error("{location}: {reason}")]
    ScenarioFile { location: String, reason: String },

    /// A simulator scenario that does not exist.
    #[error("unknown scenario `{0}` (`tom-ledger simulate --list` names them)")]
    UnknownScenario(String),

    /// A simulator backend this build cannot run on.
    #[error("backend `{0}` is not available in this build")]
    BackendUnavailable(String),

    /// A simulator backend whose program is not installed here.
    #[error(
        "backend `{backend}` needs the program `{program}`, which is not installed (not found in PATH)"
    )]
    BackendProgramMissing { backend: String, program: String },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", stderr.trim_end().replace('\n', " | "))
    }
}

fn after_suffix(after: &Option<std::sync::Arc<Error>>) -> String {
    match after {
        Some(error) => format!("{error}; "),
        None => String::new(),
    }
}

fn participant_list(participants: &[ParticipantId]) -> String {
    let named: Vec<String> = participants.iter().map(|p| format!("`{p}`")).collect();
    named.join(", ")
}

impl Error {
    /// The error inside a failed call ([`Error::CallFailed`]), else this error itself: what
    /// a caller of `join()` matches on.
    pub fn cause(&self) -> &Error {
        match self {
            Error::CallFailed { cause, .. } => cause.cause(),
            other => other,
        }
    }

    /// The error of a call's work: kept as it is when it is this crate's error, else its
    /// message.
    pub fn from_work<E: std::fmt::Display + 'static>(error: E) -> Error {
        let mut slot = Some(error);
        if let Some(own) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Error>>()
            && let Some(own) = own.take()
        {
            return own;
        }
        match slot {
            Some(other) => Error::WorkFailed(other.to_string()),
            None => Error::WorkFailed(String::new()),
        }
    }
}

fn holder_suffix(holder: &Option<i32>) -> String {
    match holder {
        Some(pid) => format!(" held by pid {pid}"),
        None => " (holder unknown)".to_string(),
    }
}

impl Error {
    /// An I/O error with the action and path it happened on.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Bad input that is not an id: a value and why it was refused.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A failed system call.
    pub fn sys(call: &'static str, source: nix::Error) -> Self {
        Error::Sys { call, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revision::Revision;
    use std::sync::Arc;

    #[test]
    fn work_errors_of_this_crate_stay_typed() {
        let timeout = Error::Timeout {
            what: "worker `x`".into(),
            after: std::time::Duration::from_secs(2),
        };
        assert!(matches!(
            Error::from_work(timeout),
            Error::Timeout { after, .. } if after == std::time::Duration::from_secs(2)
        ));
        let other = Error::from_work("disk on fire");
        assert!(matches!(&other, Error::WorkFailed(m) if m == "disk on fire"));
        assert_eq!(other.to_string(), "disk on fire");
    }

    #[test]
    fn cause_reaches_through_failed_calls() {
        let call = CallId::parse("call_p_1_abcd").expect("call id");
        let inner = Error::CallFailed {
            call: call.clone(),
            cause: Arc::new(Error::Panicked("boom".into())),
        };
        let outer = Error::CallFailed {
            call,
            cause: Arc::new(inner),
        };
        assert!(matches!(outer.cause(), Error::Panicked(m) if m == "boom"));
        let plain = Error::invalid("x", "y");
        assert!(std::ptr::eq(plain.cause(), &plain));
    }

    #[test]
    fn messages_stay_as_they_were() {
        let after = Some(Arc::new(Error::WorkFailed("exit 3".into())));
        let e = Error::CallbackPanicked {
            callback: "on_cleanup",
            message: "oops".into(),
            after,
        };
        assert_eq!(e.to_string(), "exit 3; on_cleanup panicked: oops");
        let e = Error::StartedParticipantsCrashed {
            error: Box::new(Error::WorkFailed("exit 3".into())),
            participants: vec![ParticipantId::parse("exec-1").expect("id")],
        };
        assert_eq!(
            e.to_string(),
            "exit 3; participant `exec-1` started by this call crashed"
        );
    }

    #[test]
    fn backend_errors_name_what_was_wrong_on_one_line() {
        let conflict = Error::Conflict {
            operation: OperationId::parse("op_a").unwrap(),
            expected: Revision::new(4),
            found: Revision::new(6),
        };
        assert_eq!(
            conflict.to_string(),
            "operation `op_a` changed meanwhile: expected revision 4, found 6"
        );
        let unavailable = Error::Unavailable {
            location: "http://ledger.example:19880".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            unavailable.to_string(),
            "ledger `http://ledger.example:19880` is unavailable: connection refused"
        );
    }
}
