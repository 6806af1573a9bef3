//! Errors only the command has: a plan file it cannot use, a program it cannot find, a
//! nested command run outside an operation. The library's own errors pass through.

use std::path::PathBuf;

use tom_dist_ledger::Error;

/// An error of the command itself, or one of the library's.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A plan file that cannot be used: where (`file:line:column`) and what is wrong.
    #[error("{location}: {message}")]
    Plan { location: String, message: String },

    /// A worker's program is not on `PATH`; `cwd` is set for a program given as a path,
    /// which is looked up relative to that directory.
    #[error("executable `{program}` not found{}", where_suffix(.cwd))]
    ExecutableNotFound {
        program: String,
        cwd: Option<PathBuf>,
    },

    /// `exec` or `temp` outside an operation.
    #[error(
        "`{command}` needs an operation: run it from a worker of `tom-ledger run` or pass `--operation`"
    )]
    NoOperation { command: &'static str },

    #[error(transparent)]
    Library(#[from] Error),
}

fn where_suffix(cwd: &Option<PathBuf>) -> String {
    match cwd {
        Some(dir) => format!(" in `{}`", dir.display()),
        None => " on PATH".to_string(),
    }
}
