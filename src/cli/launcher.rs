//! The seam between `run`/`exec` and the process side: a [`WorkerLauncher`] runs one
//! attempt of a worker as a tracked call of an operation, from start to outcome, and can
//! be told to stop it.
//!
//! [`ProcessLauncher`] runs each attempt as a supervised call
//! (`Operation::spawn_supervised`) whose work ([`attempt`]) starts the program with the
//! process layer (`WorkerCommand`), writes the call frame with the process in it, and
//! stops the worker's whole group through the process layer's stop ladder.

mod attempt;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use tom_dist_ledger::{CallId, CallOptions, Operation};

use super::plan::WorkerSpec;
use super::schedule::{Status, StopMode};

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

/// Workers as child processes of this process, started and stopped through the process
/// layer: each in its own process group with a parent-death signal, registered in the
/// process-wide registry, and recorded (pid, group, start time, command) in its call frame.
pub struct ProcessLauncher;

#[async_trait]
impl WorkerLauncher for ProcessLauncher {
    async fn run(&self, op: &Operation, launch: Launch) -> WorkerOutcome {
        let begun = Instant::now();
        let mut options = CallOptions::<()>::new()
            .description(launch.description.clone())
            // Failures are reported through the outcome; the caller applies its policy.
            .fail_on_crash(false);
        if let Some(parent) = launch.parent_call.clone() {
            options = options.parent(parent);
        }
        let (tx, rx) = oneshot::channel::<WorkerOutcome>();
        let call = op.spawn_supervised(options, move |ctx| async move {
            if launch.fail_on_crash {
                ctx.fail_operation_on_crash();
            }
            let mut outcome = attempt::run(&ctx, launch).await;
            // A worker that failed because the operation was aborted (a nested command
            // that stopped on the abort, say) was cancelled, not broken.
            if matches!(outcome.status, Status::Failed)
                && ctx.operation.check_abort().await.unwrap_or(false)
            {
                outcome.status = Status::Cancelled;
                outcome.error = Some("operation aborted".into());
            }
            let result = match outcome.status {
                Status::Ok => Ok(()),
                // The call ends as cancelled, which does not fail the operation.
                Status::Cancelled => {
                    ctx.token.cancel();
                    Ok(())
                }
                _ => Err(outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| outcome.status.as_str().to_string())),
            };
            let _ = tx.send(outcome);
            result
        });
        call.wait().await;
        let mut outcome = rx.await.unwrap_or_else(|_| {
            let error = call.error().unwrap_or_else(|| "worker lost".into());
            WorkerOutcome::failed(Status::Failed, error, begun.elapsed())
        });
        outcome.call = Some(call.call_id().clone());
        outcome
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
