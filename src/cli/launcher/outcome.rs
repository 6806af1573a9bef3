//! How an attempt ended, in the command's words: the library call's typed outcome (its
//! error, the worker's exit status, the stop the run asked for) as a status, an exit code
//! or signal, an error line and a result.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use tom_dist_ledger::{Error, Operation, SpawnedCall};

use super::worker::WorkerValue;
use super::{MAX_STDOUT, WorkerOutcome, human};
use crate::cli::plan::WorkerSpec;
use crate::cli::schedule::{Status, StopReason};

/// What is known once the call has ended.
pub struct Ended<'a> {
    pub spec: &'a WorkerSpec,
    /// The stop the run asked for, if any (the first one).
    pub requested: Option<StopReason>,
    pub exit: Option<ExitStatus>,
    pub duration: Duration,
}

impl Ended<'_> {
    pub async fn outcome(self, op: &Operation, call: &SpawnedCall<WorkerValue>) -> WorkerOutcome {
        let mut outcome = WorkerOutcome {
            call: Some(call.call_id().clone()),
            status: Status::Ok,
            exit_code: self.exit.and_then(|s| s.code()),
            signal: self.exit.and_then(|s| s.signal()),
            duration: self.duration,
            error: None,
            result: None,
        };
        if call.is_success() {
            outcome.result = call.result_or_none().flatten();
            return outcome;
        }
        let (status, error) = match (call.failure(), self.requested) {
            // Asked to stop: the call ended as cancelled, whatever the worker did then.
            (_, Some(reason)) => (reason.status(), self.stopped(reason)),
            (Some(cause), None) => (self.failed_status(&cause), self.failed(&cause)),
            // Cancelled by the library: the operation failed or was aborted, or this
            // participant left.
            (None, None) if op.check_abort().await.unwrap_or(false) => {
                (Status::Cancelled, "operation aborted".to_string())
            }
            (None, None) => (Status::Cancelled, "stopped".to_string()),
        };
        outcome.status = status;
        outcome.error = Some(error);
        outcome
    }

    fn stopped(&self, reason: StopReason) -> String {
        match (reason, self.spec.timeout) {
            (StopReason::Timeout, Some(t)) => format!("timed out after {}", human(t)),
            (StopReason::Timeout, None) => "stopped: the run timed out".into(),
            (StopReason::Cancelled, _) => "stopped".into(),
        }
    }

    fn failed_status(&self, cause: &Error) -> Status {
        match cause {
            Error::Timeout { .. } => Status::Timeout,
            Error::StartedParticipantsCrashed { error, .. } => self.failed_status(error),
            _ => Status::Failed,
        }
    }

    fn failed(&self, cause: &Error) -> String {
        match cause {
            Error::Timeout { after, .. } => format!("timed out after {}", human(*after)),
            Error::WorkerFailed { exit, .. } => exit_description(*exit),
            // Stopped from elsewhere in this process (a signal handler): how it ended.
            Error::WorkerStopped { reason, .. } => match self.exit {
                Some(exit) => exit_description(exit),
                None => format!("stopped: {reason}"),
            },
            Error::OutputTooLarge { .. } => {
                format!("wrote more than {MAX_STDOUT} bytes to stdout")
            }
            Error::ResultFileMissing { path, .. } => format!(
                "exited 0 without writing its result file `{}`",
                path.display()
            ),
            Error::Io { path, source, .. } if self.spec.result_file.as_ref() == Some(path) => {
                format!("cannot read result file `{}`: {source}", path.display())
            }
            Error::Decode { reason, .. } => format!("stdout is not JSON: {reason}"),
            Error::Spawn { source, .. } => self.spawn_error(source),
            Error::StartedParticipantsCrashed { error, .. } => self.failed(error),
            other => other.to_string(),
        }
    }

    fn spawn_error(&self, source: &std::io::Error) -> String {
        let spec = self.spec;
        let name = spec
            .command
            .first()
            .map_or("?".into(), |n| n.to_string_lossy());
        // A program given as a path is looked for only now: say where it was looked for.
        let resolved = if name.contains('/') {
            format!(" (`{}`)", spec.program.display())
        } else {
            String::new()
        };
        format!("cannot start `{name}`{resolved}: {source}")
    }
}

/// "exit status 3", "killed by signal 9".
fn exit_description(exit: ExitStatus) -> String {
    match (exit.code(), exit.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended abnormally".into(),
    }
}
