//! Exit statuses of `tom-ledger`: 0 success, 1 a worker or the operation failed, 2 usage or
//! input error, 128+N after signal N; `exec` passes its command's own status through.

use tom_dist_ledger::Error;

use super::error::CommandError;

/// How the command ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// A worker or the operation failed.
    Failure,
    /// Usage or input error; nothing was started or changed.
    Usage,
    /// Ended by signal N: exit 128+N.
    Signal(i32),
    /// The exit status of the command `exec` ran.
    Code(i32),
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Signal(n) => 128 + n,
            Exit::Code(c) => c,
        }
    }

    /// The status for how a process ended: its exit code, or 128+N after signal N.
    pub fn of_process(exit_code: Option<i32>, signal: Option<i32>) -> Exit {
        match (exit_code, signal) {
            (Some(0), _) => Exit::Success,
            (Some(c), _) => Exit::Code(c),
            (None, Some(n)) => Exit::Signal(n),
            (None, None) => Exit::Failure,
        }
    }
}

/// An error that ends the command: its message (one line) and exit status.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Failure,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let exit = if is_input_error(&e) {
            Exit::Usage
        } else {
            Exit::Failure
        };
        Self {
            exit,
            message: e.to_string(),
        }
    }
}

impl From<CommandError> for Failure {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Library(e) => e.into(),
            // A plan, a program or an operation the user named: input errors.
            other => Failure::usage(other.to_string()),
        }
    }
}

/// Errors that come from what the user gave us (an id, a file, a value), not from running.
pub fn is_input_error(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidId { .. }
            | Error::OperationNotFound(_)
            | Error::OperationEnded { .. }
            | Error::Invalid { .. }
            | Error::UntrustedEntry { .. }
            | Error::UntrustedLedgerDir { .. }
            | Error::TempPathRefused { .. }
            | Error::ScenarioFile { .. }
            | Error::UnknownScenario(_)
            | Error::BackendUnavailable(_)
            | Error::BackendProgramMissing { .. }
    )
}

pub type CliResult<T = Exit> = std::result::Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;
    use tom_dist_ledger::OperationId;

    #[test]
    fn codes() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Failure.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Signal(2).code(), 130);
        assert_eq!(Exit::Signal(15).code(), 143);
        assert_eq!(Exit::of_process(Some(3), None), Exit::Code(3));
        assert_eq!(Exit::of_process(None, Some(9)).code(), 137);
    }

    #[test]
    fn input_errors_exit_2() {
        let e = OperationId::parse("../x").unwrap_err();
        assert_eq!(Failure::from(e).exit, Exit::Usage);
        let e = Error::io("read", "/x", std::io::Error::other("boom"));
        assert_eq!(Failure::from(e).exit, Exit::Failure);
    }
}
