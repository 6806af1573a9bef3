//! The seam between `run`/`exec` and the process side: a [`WorkerLauncher`] runs one
//! attempt of a worker as a tracked call of an operation, from start to outcome, and can
//! be told to stop it.
//!
//! [`ProcessLauncher`] is the implementation used today: a spawned call
//! (`Operation::spawn_call`) whose work starts the program with `tokio::process` in its own
//! process group and stops the group with SIGTERM (+SIGCONT), a grace period, then
//! SIGKILL. The library's exec workers can take its place behind the same trait.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tom_dist_ledger::{CallId, CallOptions, Operation};

use super::plan::{Kind, WorkerSpec};
use super::schedule::{Status, StopMode, StopReason};

/// Largest stdout a `stdio` worker may write.
pub const MAX_STDOUT: usize = 16 * 1024 * 1024;

/// Where a worker's stdout and stderr go (a `stdio` worker's stdout is always captured).
#[derive(Clone)]
pub enum Routing {
    /// Our own stdout and stderr.
    Inherit,
    /// Both to our stderr (stdout is reserved for JSON events).
    StdoutToStderr,
    /// Line by line to a callback (shown above a progress display).
    Lines(Arc<dyn Fn(&str) + Send + Sync>),
}

/// Requests to a running worker: the latest one counts; `Kill` is never downgraded.
pub type StopSignal = watch::Receiver<Option<StopMode>>;

/// A new stop request channel.
pub fn stop_channel() -> (watch::Sender<Option<StopMode>>, StopSignal) {
    watch::channel(None)
}

/// Ask a worker to stop (a kill request stays a kill request).
pub fn request_stop(tx: &watch::Sender<Option<StopMode>>, mode: StopMode) {
    tx.send_if_modified(|current| {
        if matches!(current, Some(StopMode::Kill)) || *current == Some(mode) {
            return false;
        }
        *current = Some(mode);
        true
    });
}

/// A worker that has started.
#[derive(Clone, Debug)]
pub struct StartedWorker {
    pub call: CallId,
    pub pid: i32,
}

/// One attempt of a worker, to run.
pub struct Launch {
    pub spec: Arc<WorkerSpec>,
    pub grace: Duration,
    pub stop: StopSignal,
    /// The call of another participant this one runs for (nested `exec`).
    pub parent_call: Option<CallId>,
    pub description: String,
    pub routing: Routing,
    /// Called once the process runs.
    pub on_started: Box<dyn FnOnce(StartedWorker) + Send>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerOutcome {
    pub call: Option<CallId>,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration: Duration,
    /// Why it did not succeed.
    pub error: Option<String>,
    pub result: Option<serde_json::Value>,
}

impl WorkerOutcome {
    fn failed(status: Status, error: String, duration: Duration) -> Self {
        Self {
            call: None,
            status,
            exit_code: None,
            signal: None,
            duration,
            error: Some(error),
            result: None,
        }
    }
}

/// Runs worker attempts as tracked calls of an operation.
#[async_trait]
pub trait WorkerLauncher: Send + Sync {
    /// Run one attempt to its end. Never fails: problems are in the outcome.
    async fn run(&self, op: &Operation, launch: Launch) -> WorkerOutcome;
}

/// Workers as child processes of this process, each in its own process group.
pub struct ProcessLauncher {
    /// Exported to workers as `TOM_LEDGER_DIR`.
    pub ledger_dir: PathBuf,
}

#[async_trait]
impl WorkerLauncher for ProcessLauncher {
    async fn run(&self, op: &Operation, launch: Launch) -> WorkerOutcome {
        let begun = Instant::now();
        let (tx, mut rx) = watch::channel::<Option<WorkerOutcome>>(None);
        let mut seen_by_call = tx.subscribe();
        let mut options = CallOptions::<()>::new()
            .description(launch.description.clone())
            // `run` applies its own failure policy (keep-going, fail_on_crash).
            .fail_on_crash(false);
        if let Some(parent) = launch.parent_call.clone() {
            options = options.parent(parent);
        }
        let env = ledger_env(&self.ledger_dir, op);
        let call = op.spawn_call(options, move |ctx| async move {
            let mut env = env;
            env.insert("TOM_LEDGER_CALL".into(), ctx.call_id.to_string());
            tokio::spawn(supervise(launch, env, ctx.call_id.clone(), tx));
            let _ = seen_by_call.wait_for(Option::is_some).await;
            let outcome = seen_by_call.borrow().clone();
            match outcome {
                Some(o) if o.status == Status::Ok => Ok(()),
                // Recorded as cancelled by `SpawnedCall::cancel` below.
                Some(o) if o.status == Status::Cancelled => std::future::pending().await,
                Some(o) => Err(o.error.unwrap_or_else(|| o.status.as_str().to_string())),
                None => Err("worker lost".to_string()),
            }
        });
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(o) => o.clone(),
            Err(_) => None,
        };
        let mut outcome = match outcome {
            Some(o) => o,
            // The work never ran: the call could not be recorded, or was cancelled first.
            None => {
                call.wait().await;
                let error = call.error().unwrap_or_else(|| "not started".into());
                let status = if call.is_cancelled() {
                    Status::Cancelled
                } else {
                    Status::Failed
                };
                WorkerOutcome::failed(status, error, begun.elapsed())
            }
        };
        if outcome.status == Status::Cancelled {
            call.cancel().await;
        } else {
            call.wait().await;
        }
        outcome.call = Some(call.call_id().clone());
        outcome
    }
}

/// The variables that let nested `tom-ledger` commands join the operation.
fn ledger_env(dir: &std::path::Path, op: &Operation) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("TOM_LEDGER_DIR".into(), dir.display().to_string());
    env.insert("TOM_LEDGER_OPERATION".into(), op.operation_id().to_string());
    env.insert(
        "TOM_LEDGER_PARTICIPANT".into(),
        op.participant_id().to_string(),
    );
    env
}

/// Start the process, watch it to the end, stop it when asked or timed out, and publish
/// the outcome on `tx`.
async fn supervise(
    launch: Launch,
    env: BTreeMap<String, String>,
    call: CallId,
    tx: watch::Sender<Option<WorkerOutcome>>,
) {
    let begun = Instant::now();
    let outcome = match spawn(&launch, &env) {
        Err(e) => WorkerOutcome::failed(Status::Failed, e, begun.elapsed()),
        Ok(child) => watch_child(child, launch, call, begun).await,
    };
    tx.send_replace(Some(outcome));
}

fn spawn(launch: &Launch, env: &BTreeMap<String, String>) -> Result<tokio::process::Child, String> {
    let spec = &launch.spec;
    if launch.stop.borrow().is_some() {
        return Err("stopped before it started".into());
    }
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.arg0(&spec.command[0])
        .args(&spec.command[1..])
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .envs(env)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    let (out, err) = match (&launch.routing, spec.kind) {
        (Routing::Inherit, _) => (Stdio::inherit(), Stdio::inherit()),
        (Routing::StdoutToStderr, _) => {
            let out = std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null());
            (out, Stdio::inherit())
        }
        (Routing::Lines(_), _) => (Stdio::piped(), Stdio::piped()),
    };
    cmd.stdout(if spec.kind == Kind::Stdio {
        Stdio::piped()
    } else {
        out
    });
    cmd.stderr(err);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // A worker does not outlive a supervisor killed with SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", spec.command[0]))
}

async fn watch_child(
    mut child: tokio::process::Child,
    launch: Launch,
    call: CallId,
    begun: Instant,
) -> WorkerOutcome {
    let spec = launch.spec.clone();
    let pid = child.id().map_or(0, |p| p as i32);
    let pgid = Pid::from_raw(pid);
    (launch.on_started)(StartedWorker { call, pid });
    let captured = if spec.kind == Kind::Stdio {
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(read_bounded(out)))
    } else {
        None
    };
    let mut forwarders = Vec::new();
    if let Routing::Lines(f) = &launch.routing {
        if let Some(out) = child.stdout.take() {
            forwarders.push(tokio::spawn(forward_lines(out, f.clone())));
        }
        if let Some(err) = child.stderr.take() {
            forwarders.push(tokio::spawn(forward_lines(err, f.clone())));
        }
    }
    let mut stop = launch.stop;
    let timeout_at = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stopped: Option<StopReason> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut listening = true;
    let status = loop {
        let status_now = *stop.borrow_and_update();
        match status_now {
            Some(StopMode::Kill) => {
                stopped.get_or_insert(StopReason::Cancelled);
                let _ = killpg(pgid, Signal::SIGKILL);
                kill_at = None;
            }
            Some(StopMode::Graceful(reason)) if stopped.is_none() => {
                stopped = Some(reason);
                terminate(pgid);
                kill_at = Some(tokio::time::Instant::now() + launch.grace);
            }
            _ => {}
        }
        tokio::select! {
            s = child.wait() => break s,
            changed = stop.changed(), if listening => {
                // Once nobody can ask any more, only the child and the clocks count.
                listening = changed.is_ok();
            }
            _ = sleep_until(timeout_at), if stopped.is_none() && timeout_at.is_some() => {
                stopped = Some(StopReason::Timeout);
                terminate(pgid);
                kill_at = Some(tokio::time::Instant::now() + launch.grace);
            }
            _ = sleep_until(kill_at), if kill_at.is_some() => {
                let _ = killpg(pgid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    // Whatever the leader left behind in its group goes too.
    clear_group(pgid, launch.grace, &mut stop).await;
    for f in forwarders {
        let _ = f.await;
    }
    let duration = begun.elapsed();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return WorkerOutcome::failed(Status::Failed, format!("wait failed: {e}"), duration);
        }
    };
    let mut outcome = WorkerOutcome {
        call: None,
        status: Status::Ok,
        exit_code: status.code(),
        signal: status.signal(),
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
            Some(task) => match task.await {
                Ok(Ok(bytes)) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| format!("stdout is not JSON: {e}")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(format!("stdout lost: {e}")),
            },
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

/// SIGTERM and SIGCONT to the group (a stopped process must wake up to see SIGTERM).
fn terminate(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let _ = killpg(pgid, Signal::SIGCONT);
}

/// Whether anything of the group still runs. Zombies do not count: an orphan waits to be
/// reaped by init, which may take a while, but it runs nothing any more.
fn group_alive(pgid: Pid) -> bool {
    if killpg(pgid, None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|e| {
        let is_pid = e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid && live_member(&e.path().join("stat"), pgid.as_raw())
    })
}

/// `/proc/PID/stat` of a process in group `pgid` that is not a zombie.
fn live_member(stat: &std::path::Path, pgid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return false;
    };
    // After the command name (which may hold spaces and parentheses): state, ppid, pgrp.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("Z");
    let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
    group == Some(pgid) && state != "Z" && state != "X"
}

/// Stop what is left of a group whose leader has exited: the ladder, returning as soon as
/// the group is gone; a kill request skips the grace.
async fn clear_group(pgid: Pid, grace: Duration, stop: &mut StopSignal) {
    if !group_alive(pgid) {
        return;
    }
    terminate(pgid);
    let tick = Duration::from_millis(10);
    let deadline = Instant::now() + grace;
    while group_alive(pgid) && Instant::now() < deadline {
        if matches!(*stop.borrow(), Some(StopMode::Kill)) {
            break;
        }
        tokio::time::sleep(tick).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && Instant::now() < deadline {
        let _ = killpg(pgid, Signal::SIGKILL);
        tokio::time::sleep(tick).await;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

async fn forward_lines(stream: impl AsyncRead + Unpin, f: Arc<dyn Fn(&str) + Send + Sync>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                f(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

/// `1.5s`, `2m`, `500ms`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
