//! What a runner is asked to do: [`RunOptions`] (timeout, grace, cancellation, output
//! bounds and callbacks), kept apart from the runners themselves (`run.rs`).

use std::process::ExitStatus;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lines::DEFAULT_MAX_LINE;
use super::worker::WorkerInfo;

/// Default bound on a stdio worker's stdout: 16 MiB.
pub const DEFAULT_MAX_STDOUT: usize = 16 * 1024 * 1024;

/// Default number of stderr lines kept for error messages.
pub const DEFAULT_STDERR_TAIL: usize = 20;

/// Receives one line of a worker's output.
pub type LineCallback = Box<dyn FnMut(&str) + Send>;

/// Receives the identity of the worker right after the spawn.
pub type SpawnCallback = Box<dyn FnOnce(&WorkerInfo) + Send>;

/// Receives the worker's exit status.
pub type ExitCallback = Box<dyn FnOnce(ExitStatus) + Send>;

/// Options of both runners.
pub struct RunOptions {
    /// Stop the worker and fail after this long (time stopped by job control excluded).
    pub timeout: Option<Duration>,
    /// Grace between SIGTERM and SIGKILL when stopping; unset, the supervisor's default
    /// ([`DEFAULT_GRACE`] here, the operation's for a ledger's exec worker).
    pub grace: Option<Duration>,
    /// Cancelling it stops the worker; the run fails with [`Error::WorkerStopped`].
    pub cancel: Option<CancellationToken>,
    /// Stdio runner: most bytes of stdout accepted.
    pub max_stdout: usize,
    /// Lines of stderr kept for the error message of a failed worker.
    pub stderr_tail: usize,
    /// Longer output lines are cut.
    pub max_line: usize,
    /// What a cut line ends with (default [`TRUNCATED_MARK`](super::TRUNCATED_MARK)).
    pub cut_mark: Option<String>,
    /// File runner: delete the result file once read (and after a failure).
    pub delete_result_file: bool,
    pub(super) on_spawn: Option<SpawnCallback>,
    pub(super) on_stdout: Option<LineCallback>,
    pub(super) on_stderr: Option<LineCallback>,
    pub(super) on_exit: Option<ExitCallback>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: None,
            grace: None,
            cancel: None,
            max_stdout: DEFAULT_MAX_STDOUT,
            stderr_tail: DEFAULT_STDERR_TAIL,
            max_line: DEFAULT_MAX_LINE,
            cut_mark: None,
            delete_result_file: true,
            on_spawn: None,
            on_stdout: None,
            on_stderr: None,
            on_exit: None,
        }
    }
}

impl RunOptions {
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    pub fn cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    pub fn max_stdout(mut self, bytes: usize) -> Self {
        self.max_stdout = bytes;
        self
    }

    /// Output lines longer than `bytes` are cut there and end with `mark`.
    pub fn max_line(mut self, bytes: usize, mark: Option<String>) -> Self {
        self.max_line = bytes;
        self.cut_mark = mark;
        self
    }

    pub fn delete_result_file(mut self, delete: bool) -> Self {
        self.delete_result_file = delete;
        self
    }

    /// Called right after the spawn with what identifies the worker.
    pub fn on_spawn(mut self, f: impl FnOnce(&WorkerInfo) + Send + 'static) -> Self {
        self.on_spawn = Some(Box::new(f));
        self
    }

    /// File runner: each stdout line.
    pub fn on_stdout(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(f));
        self
    }

    /// Each stderr line, as it comes.
    pub fn on_stderr(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(f));
        self
    }

    /// Called once with the worker's exit status, whatever the outcome.
    pub fn on_exit(mut self, f: impl FnOnce(ExitStatus) + Send + 'static) -> Self {
        self.on_exit = Some(Box::new(f));
        self
    }
}
