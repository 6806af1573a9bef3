//! One attempt of a worker, inside its call: start the program with the process layer,
//! record it in the call's frame, route its output, wait for it, and stop its group when
//! asked, when it times out or when the call is cancelled. Whatever the leader leaves
//! behind in its group is stopped too, so nothing of an attempt outlives it.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tom_dist_ledger::Error;
use tom_dist_ledger::ledger::{CallContext, process_record};
use tom_dist_ledger::process::{self, LineDecoder, StdioMode, Worker, WorkerCommand};

use super::{Launch, MAX_STDOUT, Routing, StartedWorker, StopSignal, WorkerOutcome, human};
use crate::cli::plan::{Kind, WorkerSpec};
use crate::cli::schedule::{Status, StopMode, StopReason};

/// How long a worker's output may stay open once its group is gone (only a descendant
/// that left the group can hold it that long).
const DRAIN_BOUND: Duration = Duration::from_secs(3);

/// Run one attempt to its end inside the call `ctx`.
pub(super) async fn run(ctx: &CallContext, launch: Launch) -> WorkerOutcome {
    let begun = Instant::now();
    let Launch {
        spec,
        grace,
        mut stop,
        routing,
        on_started,
        ..
    } = launch;
    if stop.borrow().is_some() {
        let error = "stopped before it started".to_string();
        return WorkerOutcome::failed(Status::Failed, error, begun.elapsed());
    }
    let env = ctx.operation.worker_env(&ctx.call_id);
    let mut worker = match command(&spec, &routing, env).spawn() {
        Ok(w) => w,
        Err(e) => {
            return WorkerOutcome::failed(Status::Failed, spawn_error(&spec, e), begun.elapsed());
        }
    };
    let readers = Readers::start(&mut worker, &spec, &routing);
    // The frame is written once the process runs, with what recovery needs to stop it.
    if let Err(e) = ctx.open_frame(Some(process_record(worker.info()))).await {
        worker.kill().await;
        readers.finish().await;
        let error = format!("cannot record the worker: {e}");
        return WorkerOutcome::failed(Status::Failed, error, begun.elapsed());
    }
    on_started(StartedWorker {
        call: ctx.call_id.clone(),
        pid: worker.pid(),
    });
    let end = wait_for_end(&mut worker, &mut stop, spec.timeout, ctx).await;
    let (status, stopped) = match end {
        End::Exited(status) => {
            // Whatever the leader left behind in its group goes too.
            let reason = process::StopReason::Requested;
            stop_group(&mut worker, Some(grace), reason, &mut stop).await;
            (status.map_err(|e| format!("wait failed: {e}")), None)
        }
        End::Stopped { reason, kill } => {
            let why = match reason {
                StopReason::Timeout => process::StopReason::Timeout,
                StopReason::Cancelled => process::StopReason::Cancelled,
            };
            let grace = (!kill).then_some(grace);
            let status = stop_group(&mut worker, grace, why, &mut stop).await;
            (
                status.ok_or_else(|| "the worker did not exit".to_string()),
                Some(reason),
            )
        }
    };
    let captured = readers.finish().await;
    let duration = begun.elapsed();
    let status = match (status, stopped) {
        (Ok(s), _) => Some(s),
        (Err(_), Some(_)) => None,
        (Err(e), None) => return WorkerOutcome::failed(Status::Failed, e, duration),
    };
    outcome(&spec, status, stopped, captured, duration)
}

/// The worker's command: the program as resolved, `argv[0]` as written, the plan's
/// environment and then the variables that let nested commands join the operation.
fn command(spec: &WorkerSpec, routing: &Routing, env: Vec<(String, String)>) -> WorkerCommand {
    let (out, err) = match routing {
        Routing::Inherit => (StdioMode::Inherit, StdioMode::Inherit),
        Routing::StdoutToStderr => (StdioMode::Stderr, StdioMode::Inherit),
        Routing::Lines(..) => (StdioMode::Piped, StdioMode::Piped),
    };
    let out = if spec.kind == Kind::Stdio {
        StdioMode::Piped
    } else {
        out
    };
    let mut cmd = WorkerCommand::new(&spec.program)
        .current_dir(&spec.cwd)
        .stdin(StdioMode::Null)
        .stdout(out)
        .stderr(err);
    if let Some((name, args)) = spec.command.split_first() {
        cmd = cmd.arg0(name).args(args);
    }
    for (k, v) in spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
        cmd = cmd.env(k, v);
    }
    for (k, v) in &env {
        cmd = cmd.env(k, v);
    }
    cmd
}

fn spawn_error(spec: &WorkerSpec, e: Error) -> String {
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
    match e {
        Error::Spawn { source, .. } => format!("cannot start `{name}`{resolved}: {source}"),
        other => format!("cannot start `{name}`{resolved}: {other}"),
    }
}

/// Why the wait for the worker ended.
enum End {
    Exited(Result<ExitStatus, String>),
    /// Stopped from outside; `kill` skips the grace.
    Stopped {
        reason: StopReason,
        kill: bool,
    },
}

async fn wait_for_end(
    worker: &mut Worker,
    stop: &mut StopSignal,
    timeout: Option<Duration>,
    ctx: &CallContext,
) -> End {
    // Time stopped by Ctrl+Z does not count against the worker's timeout.
    let jobs = process::job_control();
    let deadline = timeout.map(|t| jobs.deadline(t));
    let timer = jobs.sleep_until_opt(deadline.as_ref());
    tokio::pin!(timer);
    let mut listening = true;
    loop {
        match *stop.borrow_and_update() {
            Some(StopMode::Kill) => {
                return End::Stopped {
                    reason: StopReason::Cancelled,
                    kill: true,
                };
            }
            Some(StopMode::Graceful(reason)) => {
                return End::Stopped {
                    reason,
                    kill: false,
                };
            }
            None => {}
        }
        tokio::select! {
            status = worker.wait() => {
                return End::Exited(status.map_err(|e| e.to_string()));
            }
            changed = stop.changed(), if listening => {
                // Once nobody can ask any more, only the worker and the clocks count.
                listening = changed.is_ok();
            }
            // The library cancels the call (the operation failed, the session left).
            _ = ctx.token.cancelled() => {
                return End::Stopped { reason: StopReason::Cancelled, kill: false };
            }
            _ = &mut timer, if deadline.is_some() => {
                return End::Stopped { reason: StopReason::Timeout, kill: false };
            }
        }
    }
}

/// The process layer's stop ladder on the worker's group (`grace: None` kills at once);
/// a kill request while it runs skips the rest of the grace. The worker's exit status.
async fn stop_group(
    worker: &mut Worker,
    grace: Option<Duration>,
    reason: process::StopReason,
    stop: &mut StopSignal,
) -> Option<ExitStatus> {
    let kill_requested = |stop: &StopSignal| matches!(*stop.borrow(), Some(StopMode::Kill));
    if grace.is_some() && !kill_requested(stop) {
        let ladder = worker.stop_with(grace, reason);
        tokio::pin!(ladder);
        let mut listening = true;
        loop {
            tokio::select! {
                outcome = &mut ladder => return outcome.status,
                changed = stop.changed(), if listening => {
                    listening = changed.is_ok();
                    if kill_requested(stop) {
                        break;
                    }
                }
            }
        }
    }
    worker.stop_with(None, reason).await.status
}

/// The tasks that read a worker's pipes.
struct Readers {
    /// A `stdio` worker's stdout, bounded.
    captured: Option<JoinHandle<Result<Vec<u8>, String>>>,
    /// Lines forwarded to the progress display.
    forwarders: Vec<JoinHandle<()>>,
}

impl Readers {
    fn start(worker: &mut Worker, spec: &WorkerSpec, routing: &Routing) -> Readers {
        let captured = if spec.kind == Kind::Stdio {
            worker
                .take_stdout()
                .map(|out| tokio::spawn(read_bounded(out)))
        } else {
            None
        };
        let mut forwarders = Vec::new();
        if let Routing::Lines(f, max_line) = routing {
            if let Some(out) = worker.take_stdout() {
                forwarders.push(tokio::spawn(forward_lines(out, f.clone(), *max_line)));
            }
            if let Some(err) = worker.take_stderr() {
                forwarders.push(tokio::spawn(forward_lines(err, f.clone(), *max_line)));
            }
        }
        Readers {
            captured,
            forwarders,
        }
    }

    /// Wait (bounded) for the pipes to close; the captured stdout, if any.
    async fn finish(self) -> Option<Result<Vec<u8>, String>> {
        let deadline = Instant::now() + DRAIN_BOUND;
        for f in self.forwarders {
            let _ = bounded(f, deadline).await;
        }
        let task = self.captured?;
        Some(match bounded(task, deadline).await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(format!("stdout lost: {e}")),
            None => Err("stdout still open after the worker's group was gone".into()),
        })
    }
}

/// The task's result, or `None` (and the task aborted) when it is not done by `deadline`.
async fn bounded<T>(
    mut task: JoinHandle<T>,
    deadline: Instant,
) -> Option<Result<T, tokio::task::JoinError>> {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(joined) => Some(joined),
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// How the attempt ended, from the exit status, why it was stopped and its result.
fn outcome(
    spec: &WorkerSpec,
    status: Option<ExitStatus>,
    stopped: Option<StopReason>,
    captured: Option<Result<Vec<u8>, String>>,
    duration: Duration,
) -> WorkerOutcome {
    let mut outcome = WorkerOutcome {
        call: None,
        status: Status::Ok,
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        duration,
        error: None,
        result: None,
    };
    if let Some(reason) = stopped {
        outcome.status = reason.status();
        outcome.error = Some(match (reason, spec.timeout) {
            (StopReason::Timeout, Some(t)) => format!("timed out after {}", human(t)),
            (StopReason::Timeout, None) => "stopped: the run timed out".into(),
            (StopReason::Cancelled, _) => "stopped".into(),
        });
        return outcome;
    }
    let Some(status) = status else {
        outcome.status = Status::Failed;
        outcome.error = Some("ended abnormally".into());
        return outcome;
    };
    if !status.success() {
        outcome.status = Status::Failed;
        outcome.error = Some(match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended abnormally".into(),
        });
        return outcome;
    }
    let result = match spec.kind {
        Kind::Command => Ok(None),
        Kind::Stdio => match captured {
            Some(Ok(bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("stdout is not JSON: {e}")),
            Some(Err(e)) => Err(e),
            None => Err("stdout lost".into()),
        },
        Kind::File => read_result_file(spec.result_file.as_deref()),
    };
    match result {
        Ok(r) => outcome.result = r,
        Err(e) => {
            outcome.status = Status::Failed;
            outcome.error = Some(e);
        }
    }
    outcome
}

fn read_result_file(path: Option<&std::path::Path>) -> Result<Option<serde_json::Value>, String> {
    let Some(path) = path else { return Ok(None) };
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "exited 0 without writing its result file `{}`",
            path.display()
        )),
        Err(e) => Err(format!("cannot read result file `{}`: {e}", path.display())),
    }
}

async fn read_bounded(out: impl AsyncRead + Unpin) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut limited = out.take(MAX_STDOUT as u64 + 1);
    limited
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read stdout: {e}"))?;
    if bytes.len() > MAX_STDOUT {
        // Keep the pipe drained so the worker does not block on a full pipe.
        let mut rest = limited.into_inner();
        let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
        return Err(format!("wrote more than {MAX_STDOUT} bytes to stdout"));
    }
    Ok(bytes)
}

/// Each line of `stream` to `f`, decoded across chunk boundaries; a line longer than
/// `max_line` bytes is cut there, and says so.
async fn forward_lines(
    mut stream: impl AsyncRead + Unpin,
    f: Arc<dyn Fn(&str) + Send + Sync>,
    max_line: usize,
) {
    let mark = format!(" [line cut at {max_line} bytes: raise the limit with --max-line]");
    let mut decoder = LineDecoder::with_mark(max_line, mark);
    let mut emit = |line: String| f(&line);
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => decoder.push(&buf[..n], &mut emit),
        }
    }
    decoder.finish(&mut emit);
}
