//! The seam between `run`/`exec` and the library: a [`WorkerLauncher`] runs one
//! attempt of a worker as a tracked call of an operation, from start to outcome, and can
//! be told to stop it.
//!
//! [`ProcessLauncher`] runs each attempt with one library call,
//! `Operation::exec_worker`, built from the plan's worker ([`worker`]); the library
//! starts it, records it in the call frame and stops its whole group. This module only
//! says what to run and turns the call's typed outcome into the command's words
//! ([`outcome`]).

mod outcome;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use tom_dist_ledger::process::Signal;
use tom_dist_ledger::{CallId, Operation};

use super::plan::WorkerSpec;
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
    /// Line by line to a callback (shown above a progress display); lines longer than
    /// the limit (bytes) are cut there with a note saying so.
    Lines(Arc<dyn Fn(&str) + Send + Sync>, usize),
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
    /// Recorded on the call's frame: when this process crashes while the worker runs,
    /// the operation fails. The worker's own failure is reported through the outcome.
    pub fail_on_crash: bool,
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
    pub(super) fn failed(status: Status, error: String, duration: Duration) -> Self {
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

/// Workers as child processes of this process, run by the library
/// (`Operation::exec_worker`): each in its own process group with a parent-death signal,
/// registered in the process-wide registry, and recorded in its call frame.
pub struct ProcessLauncher;

#[async_trait]
impl WorkerLauncher for ProcessLauncher {
    async fn run(&self, op: &Operation, launch: Launch) -> WorkerOutcome {
        let begun = Instant::now();
        let mut stop = launch.stop.clone();
        if stop.borrow().is_some() {
            let error = "stopped before it started".to_string();
            return WorkerOutcome::failed(Status::Failed, error, begun.elapsed());
        }
        let spec = launch.spec.clone();
        let (exec, exit) = worker::exec_worker(launch);
        let call = op.exec_worker(exec);
        // The latest stop request counts; a kill skips what is left of the grace.
        let mut requested: Option<StopReason> = None;
        let mut listening = true;
        // The outcome is acted on as soon as it is known; the library records the end
        // meanwhile (the next worker starts first).
        loop {
            tokio::select! {
                _ = call.wait_decided() => break,
                changed = stop.changed(), if listening => {
                    listening = changed.is_ok();
                    match *stop.borrow_and_update() {
                        Some(StopMode::Graceful(reason)) => {
                            requested.get_or_insert(reason);
                            call.request_cancel();
                        }
                        Some(StopMode::Kill) => {
                            requested.get_or_insert(StopReason::Cancelled);
                            call.request_cancel();
                            call.kill(Signal::SIGKILL);
                        }
                        None => {}
                    }
                }
            }
        }
        let ended = outcome::Ended {
            spec: &spec,
            requested,
            exit: exit.take(),
            duration: begun.elapsed(),
        };
        ended.outcome(op, &call).await
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
