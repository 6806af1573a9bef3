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

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lines::{LineDecoder, LineTail};
use super::run_options::{LineCallback, RunOptions};
use super::signal::{Signal, StopReason};
use super::spawn::{StdioMode, WorkerCommand};
use super::stop::DEFAULT_GRACE;
use super::worker::{Worker, WorkerInfo};
use crate::error::{Error, Result};

/// How long the output pipes may stay open once the worker's group is gone (only an
/// escaped descendant can hold them that long).
const DRAIN_BOUND: Duration = Duration::from_secs(3);

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
///
/// (Not an `async fn`: the returned future holds the command and options once, inside
/// the supervision, instead of a second time as its own arguments. Nothing runs until it
/// is polled.)
pub fn run_to_exit(
    cmd: WorkerCommand,
    opts: RunOptions,
) -> impl Future<Output = Result<RunOutput>> + Send {
    let start = Box::new(Start {
        cmd,
        opts,
        collect: None,
    });
    // `map`, not an async block awaiting it: that would keep room for the supervision
    // twice (the captured future, and the one being awaited).
    supervise(start).map(|run| {
        let run = run?;
        run.ended.map(|status| RunOutput {
            data: Vec::new(),
            status,
            info: run.info,
            elapsed: run.elapsed,
        })
    })
}

/// Runs a worker whose stdout is its result and whose stderr is its log.
///
/// Fails with [`Error::Spawn`], [`Error::WorkerFailed`] (non-zero exit or death by
/// signal, with the stderr tail), [`Error::OutputTooLarge`], [`Error::Timeout`] or
/// [`Error::WorkerStopped`]; in every case the worker's group is gone when this returns.
/// Nothing runs until the future is polled.
pub fn run_stdio(
    cmd: WorkerCommand,
    opts: RunOptions,
) -> impl Future<Output = Result<RunOutput>> + Send {
    let limit = opts.max_stdout;
    let start = Box::new(Start {
        cmd,
        opts,
        collect: Some(limit),
    });
    supervise(start).map(|run| {
        let run = run?;
        let data = run.stdout.unwrap_or_default();
        run.ended.map(|status| RunOutput {
            data,
            status,
            info: run.info,
            elapsed: run.elapsed,
        })
    })
}

/// Runs a worker that writes its result to `result`: to `result.tmp` first, renamed to
/// `result` when complete.
///
/// The file is read only after the worker has exited with 0; exiting 0 without the file
/// fails at once, a non-zero exit fails with the exit code and the stderr tail. A leftover
/// `result.tmp` is removed; the result file too when `delete_result_file` is set (the
/// default), after reading or after a failure. Nothing runs until the future is polled.
pub fn run_file_result(
    cmd: WorkerCommand,
    result: impl AsRef<Path>,
    opts: RunOptions,
) -> impl Future<Output = Result<RunOutput>> + Send {
    let path = result.as_ref().to_path_buf();
    let delete = opts.delete_result_file;
    let start = Box::new(Start {
        cmd,
        opts,
        collect: None,
    });
    supervise(start).map(move |run| {
        let outcome = run.and_then(|run| {
            let status = run.ended?;
            read_result(&path, &run.program, &run.tail).map(|data| RunOutput {
                data,
                status,
                info: run.info,
                elapsed: run.elapsed,
            })
        });
        remove_quietly(&tmp_path(&path));
        if delete {
            remove_quietly(&path);
        }
        outcome
    })
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

/// What a supervision starts from, boxed so that its future keeps no second copy.
struct Start {
    cmd: WorkerCommand,
    opts: RunOptions,
    /// `Some(limit)`: collect stdout up to `limit` bytes; `None`: stream it to
    /// `on_stdout` (when piped).
    collect: Option<usize>,
}

/// Spawns, streams, waits and stops. The future keeps, while the worker runs, only what
/// the wait and the end need (the options are taken apart before the first wait).
async fn supervise(start: Box<Start>) -> Result<Supervised> {
    let started = Instant::now();
    let Start { cmd, opts, collect } = *start;
    let RunOptions {
        timeout,
        grace,
        cancel,
        stderr_tail,
        max_line,
        cut_mark,
        on_spawn,
        on_stdout,
        on_stderr,
        on_exit,
        ..
    } = opts;
    let decoder = || match &cut_mark {
        Some(mark) => LineDecoder::with_mark(max_line, mark.clone()),
        None => LineDecoder::new(max_line),
    };
    let cmd = match collect {
        Some(_) => cmd.stdout(StdioMode::Piped),
        None => cmd,
    };
    let mut worker = cmd.pipe_unset_output().spawn()?;
    if let Some(f) = on_spawn {
        f(worker.info());
    }
    // The stderr tail is kept only when stderr is piped to us (nothing reaches it else).
    let stderr = worker.take_stderr();
    let tail_lines = if stderr.is_some() { stderr_tail } else { 0 };
    let tail = Arc::new(Mutex::new(LineTail::new(tail_lines)));
    let stderr_task =
        stderr.map(|err| tokio::spawn(read_lines(err, decoder(), on_stderr, Some(tail.clone()))));
    let mut collected: Option<std::result::Result<Vec<u8>, ()>> = None;
    let mut stdout_task: Option<JoinHandle<std::result::Result<Vec<u8>, ()>>> = None;
    let mut lines_task = None;
    if let Some(out) = worker.take_stdout() {
        match collect {
            Some(limit) => stdout_task = Some(tokio::spawn(collect_bounded(out, limit))),
            None => {
                lines_task = Some(tokio::spawn(read_lines(out, decoder(), on_stdout, None)));
            }
        }
    }
    drop(cut_mark);

    let end = wait_for_end(
        &mut worker,
        timeout,
        cancel,
        &mut stdout_task,
        &mut collected,
    )
    .await;
    // A stop from elsewhere (registry, signal handler) shows as death by signal: keep why.
    let outside_stop = worker.stop_reason();
    let grace = grace.unwrap_or(DEFAULT_GRACE);
    // The stop ladder, boxed: its state (timers, the wait for the group) is needed only
    // from here on, not while the worker runs.
    let status = match &end {
        End::Exited(status) => {
            Box::pin(worker.stop_with(Some(grace), StopReason::Requested)).await;
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
    if let (Some(f), Some(status)) = (on_exit, status) {
        f(status);
    }
    let program = worker.program().to_owned();
    let info = worker.info().clone();
    let tail = tail.lock().map(|t| t.joined()).unwrap_or_default();
    let too_large = matches!(collected, Some(Err(())));
    let ended = match end {
        End::TimedOut => Err(Error::Timeout {
            what: format!("worker `{program}`"),
            after: timeout.unwrap_or_default(),
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
        elapsed: started.elapsed(),
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
    // Boxed, and only with a timeout: a worker without one keeps no timer while it runs.
    let mut timer: Pin<Box<dyn Future<Output = ()> + Send + '_>> = match &deadline {
        Some(deadline) => Box::pin(jobs.sleep_until(deadline)),
        None => Box::pin(std::future::pending()),
    };
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
            _ = timer.as_mut(), if timeout.is_some() => return End::TimedOut,
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

/// The stop ladder, boxed (see [`supervise`]).
async fn stop(worker: &mut Worker, grace: Duration, reason: StopReason) -> Option<ExitStatus> {
    Box::pin(worker.stop_with(Some(grace), reason)).await.status
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

    /// What a runner's future holds for the worker's whole life: the command and
    /// options once (boxed into the supervision), not again as its own arguments, no
    /// timer without a timeout, and the stop ladder only once it is entered. (About
    /// 1.2 KB; it was 2.2 KB with the ladder inline and the second copies, and either
    /// alone brings it over the bound.)
    #[test]
    fn runner_futures_stay_small() {
        let opts = || RunOptions::default().timeout(Duration::from_secs(5));
        let sizes = [
            std::mem::size_of_val(&run_to_exit(WorkerCommand::new("true"), opts())),
            std::mem::size_of_val(&run_stdio(WorkerCommand::new("true"), opts())),
            std::mem::size_of_val(&run_file_result(WorkerCommand::new("true"), "r", opts())),
        ];
        for size in sizes {
            assert!(size <= 1536, "runner future of {size} bytes: {sizes:?}");
        }
    }

    /// The runners start nothing until polled (they are plain functions returning the
    /// future): a dropped, never polled run spawns no worker.
    #[tokio::test]
    async fn runners_start_nothing_until_polled() {
        let spawned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let opts = || {
            let seen = spawned.clone();
            RunOptions::default().on_spawn(move |_| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        };
        drop(run_to_exit(WorkerCommand::new("true"), opts()));
        drop(run_stdio(WorkerCommand::new("true"), opts()));
        drop(run_file_result(WorkerCommand::new("true"), "r", opts()));
        assert_eq!(spawned.load(std::sync::atomic::Ordering::SeqCst), 0);
        run_to_exit(WorkerCommand::new("true"), opts())
            .await
            .unwrap();
        assert_eq!(spawned.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn tmp_path_appends_suffix() {
        assert_eq!(tmp_path(Path::new("/x/r.json")), Path::new("/x/r.json.tmp"));
    }
}
