//! Runners: a worker from start to result, with its output, timeout and cancellation
//! handled. The ledger wraps them as tracked calls; they know nothing of calls.
//!
//! - [`run_stdio`]: stdout is the result (bounded), stderr is streamed line by line.
//! - [`run_file_result`]: the worker writes its result to a file (`path.tmp`, then a
//!   rename to `path`); it is read only once the worker has exited.
//!
//! Both report the worker's identity to `on_spawn` right after the spawn (for the call
//! frame), fail with the exit code or signal and the tail of stderr when the worker fails,
//! stop the whole tree through the ladder on timeout, cancellation or too much output, and
//! stop what is left of the group after a normal exit too, so no descendant outlives the
//! run.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lines::{DEFAULT_MAX_LINE, LineDecoder, LineTail};
use super::signal::{Signal, StopReason};
use super::spawn::{StdioMode, WorkerCommand};
use super::stop::DEFAULT_GRACE;
use super::worker::{Worker, WorkerInfo};
use crate::error::{Error, Result};

/// Default bound on a stdio worker's stdout: 16 MiB.
pub const DEFAULT_MAX_STDOUT: usize = 16 * 1024 * 1024;

/// Default number of stderr lines kept for error messages.
pub const DEFAULT_STDERR_TAIL: usize = 20;

/// How long the output pipes may stay open once the worker's group is gone (only an
/// escaped descendant can hold them that long).
const DRAIN_BOUND: Duration = Duration::from_secs(3);

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
    on_spawn: Option<SpawnCallback>,
    on_stdout: Option<LineCallback>,
    on_stderr: Option<LineCallback>,
    on_exit: Option<ExitCallback>,
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

/// A successful run.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// Stdout (stdio runner) or the result file's content (file runner).
    pub data: Vec<u8>,
    pub status: ExitStatus,
    pub info: WorkerInfo,
    pub elapsed: Duration,
}

/// Runs a worker for its exit status; `data` is empty. Its stdout and stderr go where
/// the command says; where it does not say, they are piped to `on_stdout`/`on_stderr`.
///
/// Fails as [`run_stdio`] does, except for the output bound.
pub async fn run_to_exit(cmd: WorkerCommand, opts: RunOptions) -> Result<RunOutput> {
    let run = supervise(cmd, opts, None).await?;
    run.ended.map(|status| RunOutput {
        data: Vec::new(),
        status,
        info: run.info,
        elapsed: run.elapsed,
    })
}

/// Runs a worker whose stdout is its result and whose stderr is its log.
///
/// Fails with [`Error::Spawn`], [`Error::WorkerFailed`] (non-zero exit or death by
/// signal, with the stderr tail), [`Error::OutputTooLarge`], [`Error::Timeout`] or
/// [`Error::WorkerStopped`]; in every case the worker's group is gone when this returns.
pub async fn run_stdio(cmd: WorkerCommand, opts: RunOptions) -> Result<RunOutput> {
    let limit = opts.max_stdout;
    let run = supervise(cmd, opts, Some(limit)).await?;
    let data = run.stdout.unwrap_or_default();
    run.ended.map(|status| RunOutput {
        data,
        status,
        info: run.info,
        elapsed: run.elapsed,
    })
}

/// Runs a worker that writes its result to `result`: to `result.tmp` first, renamed to
/// `result` when complete.
///
/// The file is read only after the worker has exited with 0; exiting 0 without the file
/// fails at once, a non-zero exit fails with the exit code and the stderr tail. A leftover
/// `result.tmp` is removed; the result file too when `delete_result_file` is set (the
/// default), after reading or after a failure.
pub async fn run_file_result(
    cmd: WorkerCommand,
    result: impl AsRef<Path>,
    opts: RunOptions,
) -> Result<RunOutput> {
    let path = result.as_ref().to_path_buf();
    let delete = opts.delete_result_file;
    let run = supervise(cmd, opts, None).await;
    let outcome = match run {
        Ok(run) => match run.ended {
            Ok(status) => read_result(&path, &run.program, &run.tail).map(|data| RunOutput {
                data,
                status,
                info: run.info,
                elapsed: run.elapsed,
            }),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    remove_quietly(&tmp_path(&path));
    if delete {
        remove_quietly(&path);
    }
    outcome
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove worker result file");
    }
}

fn read_result(path: &Path, program: &str, tail: &str) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(data) => Ok(data),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::ResultFileMissing {
            program: program.to_owned(),
            path: path.to_owned(),
            stderr: tail.to_owned(),
        }),
        Err(e) => Err(Error::io("read worker result", path, e)),
    }
}

/// A finished supervision: how the worker ended (as the run's result) and what it left.
struct Supervised {
    ended: Result<ExitStatus>,
    stdout: Option<Vec<u8>>,
    tail: String,
    info: WorkerInfo,
    program: String,
    elapsed: Duration,
}

/// Why the wait for the worker ended.
enum End {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
    TooMuchOutput,
}

/// Spawns, streams, waits and stops. `collect: Some(limit)` collects stdout up to
/// `limit` bytes; `None` streams it to `on_stdout` (when piped).
async fn supervise(
    cmd: WorkerCommand,
    mut opts: RunOptions,
    collect: Option<usize>,
) -> Result<Supervised> {
    let start = Instant::now();
    let cmd = match collect {
        Some(_) => cmd.stdout(StdioMode::Piped),
        None => cmd,
    };
    let mut worker = cmd.pipe_unset_output().spawn()?;
    let info = worker.info().clone();
    if let Some(f) = opts.on_spawn.take() {
        f(&info);
    }
    let program = worker.program().to_owned();
    let tail = Arc::new(Mutex::new(LineTail::new(opts.stderr_tail)));
    let stderr_task = worker.take_stderr().map(|err| {
        tokio::spawn(read_lines(
            err,
            decoder(&opts),
            opts.on_stderr.take(),
            Some(tail.clone()),
        ))
    });
    let mut collected: Option<std::result::Result<Vec<u8>, ()>> = None;
    let mut stdout_task: Option<JoinHandle<std::result::Result<Vec<u8>, ()>>> = None;
    let mut lines_task = None;
    if let Some(out) = worker.take_stdout() {
        match collect {
            Some(limit) => stdout_task = Some(tokio::spawn(collect_bounded(out, limit))),
            None => {
                lines_task = Some(tokio::spawn(read_lines(
                    out,
                    decoder(&opts),
                    opts.on_stdout.take(),
                    None,
                )));
            }
        }
    }

    let end = wait_for_end(
        &mut worker,
        opts.timeout,
        opts.cancel.clone(),
        &mut stdout_task,
        &mut collected,
    )
    .await;
    // A stop from elsewhere (registry, signal handler) shows as death by signal: keep why.
    let outside_stop = worker.stop_reason();
    let grace = opts.grace.unwrap_or(DEFAULT_GRACE);
    let status = match &end {
        End::Exited(status) => {
            worker.stop_with(Some(grace), StopReason::Requested).await;
            Some(*status)
        }
        End::TimedOut => stop(&mut worker, grace, StopReason::Timeout).await,
        End::Cancelled => stop(&mut worker, grace, StopReason::Cancelled).await,
        End::TooMuchOutput => stop(&mut worker, grace, StopReason::OutputTooLarge).await,
    };
    if let Some(task) = stdout_task {
        collected = Some(drain(task).await.unwrap_or(Ok(Vec::new())));
    }
    for task in [stderr_task, lines_task].into_iter().flatten() {
        drain(task).await;
    }
    if let (Some(f), Some(status)) = (opts.on_exit.take(), status) {
        f(status);
    }
    let tail = tail.lock().map(|t| t.joined()).unwrap_or_default();
    let too_large = matches!(collected, Some(Err(())));
    let ended = match end {
        End::TimedOut => Err(Error::Timeout {
            what: format!("worker `{program}`"),
            after: opts.timeout.unwrap_or_default(),
        }),
        End::Cancelled => Err(Error::WorkerStopped {
            program: program.clone(),
            reason: StopReason::Cancelled,
        }),
        End::TooMuchOutput => Err(Error::OutputTooLarge {
            program: program.clone(),
            limit: collect.unwrap_or_default(),
        }),
        End::Exited(_) if too_large => Err(Error::OutputTooLarge {
            program: program.clone(),
            limit: collect.unwrap_or_default(),
        }),
        End::Exited(status) => match outside_stop {
            Some(reason) if !status.success() => Err(Error::WorkerStopped {
                program: program.clone(),
                reason,
            }),
            _ if status.success() => Ok(status),
            _ => Err(Error::WorkerFailed {
                program: program.clone(),
                status: describe(status),
                exit: status,
                stderr: tail.clone(),
            }),
        },
    };
    Ok(Supervised {
        ended,
        stdout: collected.and_then(|c| c.ok()),
        tail,
        info,
        program,
        elapsed: start.elapsed(),
    })
}

async fn wait_for_end(
    worker: &mut Worker,
    timeout: Option<Duration>,
    cancel: Option<CancellationToken>,
    stdout_task: &mut Option<JoinHandle<std::result::Result<Vec<u8>, ()>>>,
    collected: &mut Option<std::result::Result<Vec<u8>, ()>>,
) -> End {
    // Time stopped by job control (Ctrl+Z) does not count.
    let jobs = super::pause::job_control();
    let deadline = timeout.map(|t| jobs.deadline(t));
    let timer = jobs.sleep_until_opt(deadline.as_ref());
    tokio::pin!(timer);
    let cancellable = cancel.is_some();
    let cancel = cancel.unwrap_or_default();
    loop {
        let collecting = stdout_task.is_some() && collected.is_none();
        tokio::select! {
            status = worker.wait() => match status {
                Ok(status) => return End::Exited(status),
                // Waiting itself failed (should not happen): treat as a kill by SIGKILL.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot wait for worker");
                    return End::Exited(ExitStatus::from_raw(Signal::SIGKILL as i32));
                }
            },
            _ = &mut timer, if timeout.is_some() => return End::TimedOut,
            _ = cancel.cancelled(), if cancellable => return End::Cancelled,
            joined = async {
                match stdout_task.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if collecting => {
                *stdout_task = None;
                let too_much = matches!(joined, Ok(Err(())));
                *collected = Some(joined.unwrap_or(Ok(Vec::new())));
                if too_much {
                    return End::TooMuchOutput;
                }
            }
        }
    }
}

async fn stop(worker: &mut Worker, grace: Duration, reason: StopReason) -> Option<ExitStatus> {
    worker.stop_with(Some(grace), reason).await.status
}

/// Waits for a reader to reach end of stream; gives up after [`DRAIN_BOUND`].
async fn drain<T>(mut task: JoinHandle<T>) -> Option<T> {
    match tokio::time::timeout(DRAIN_BOUND, &mut task).await {
        Ok(joined) => joined.ok(),
        Err(_) => {
            tracing::warn!("worker output still open after its group was stopped; not waiting");
            task.abort();
            None
        }
    }
}

/// "exited with code 3", "was killed by SIGKILL".
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(sig) => format!("was killed by {sig}"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        None => format!("ended with status `{status}`"),
    }
}

fn decoder(opts: &RunOptions) -> LineDecoder {
    match &opts.cut_mark {
        Some(mark) => LineDecoder::with_mark(opts.max_line, mark.clone()),
        None => LineDecoder::new(opts.max_line),
    }
}

async fn read_lines<R: AsyncRead + Unpin>(
    mut reader: R,
    mut decoder: LineDecoder,
    mut callback: Option<LineCallback>,
    tail: Option<Arc<Mutex<LineTail>>>,
) {
    let mut emit = |line: String| {
        if let Some(tail) = &tail
            && let Ok(mut tail) = tail.lock()
        {
            tail.push(&line);
        }
        if let Some(cb) = callback.as_mut() {
            cb(&line);
        }
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => decoder.push(&buf[..n], &mut emit),
        }
    }
    decoder.finish(&mut emit);
}

/// Reads to end of stream; `Err(())` as soon as more than `limit` bytes came.
async fn collect_bounded<R: AsyncRead + Unpin>(
    reader: R,
    limit: usize,
) -> std::result::Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let _ = reader.take(bound).read_to_end(&mut out).await;
    if out.len() > limit { Err(()) } else { Ok(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exit_and_signal() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exited with code 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "was killed by SIGKILL");
    }

    #[test]
    fn tmp_path_appends_suffix() {
        assert_eq!(tmp_path(Path::new("/x/r.json")), Path::new("/x/r.json.tmp"));
    }
}
