//! `tom-ledger run`: one operation, its workers scheduled through the DAG, and an end that
//! is always recorded: completed and archived on success; failed, temp resources deleted
//! and archived on failure, abort, timeout or signal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tom_dist_ledger::process::job_control;
use tom_dist_ledger::{Error, Ledger, LogLevel, Operation, OperationId, OperationOptions};

use super::Context;
use super::args::RunArgs;
use super::exit::{CliResult, Exit, Failure};
use super::launcher::{
    Launch, ProcessLauncher, Routing, StartedWorker, WorkerLauncher, WorkerOutcome, human,
    request_stop, stop_channel,
};
use super::output::{
    Event, Mode, OperationFinished, OperationStarted, Output, WorkerFinished, WorkerStarted,
};
use super::plan::{Plan, WorkerSpec};
use super::schedule::{Final, Interrupt, Node, Schedule, Started, Status, StopReason};
use super::signals::Signals;

/// One attempt at writing the end of the operation when the ledger does not answer; the
/// run exits after it whatever the ledger says.
const LEDGER_TRY: Duration = Duration::from_secs(5);

/// Why a run was stopped from outside its workers; the first cause counts.
#[derive(Clone, Debug, PartialEq)]
pub enum Cause {
    Signal(i32),
    Aborted,
    OperationFailed(String),
    Timeout(Duration),
}

impl Cause {
    fn reason(&self, op: &OperationId) -> String {
        match self {
            Cause::Signal(n) => format!("interrupted by {}", signal_name(*n)),
            Cause::Aborted => format!("operation `{op}` was aborted"),
            Cause::OperationFailed(r) => r.clone(),
            Cause::Timeout(d) => format!("the run timed out after {}", human(*d)),
        }
    }
}

pub fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {n}"))
}

pub async fn run(ctx: &Context, args: RunArgs) -> CliResult {
    let begun = Instant::now();
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::failed(format!("cannot read the current directory: {e}")))?;
    let (plan, description) = match &args.plan {
        Some(file) => (Plan::load(file)?, format!("run --plan {}", file.display())),
        None => (
            Plan::single(&args.cmd, &cwd)?,
            format!("run {}", super::plan::command_line(&args.cmd)),
        ),
    };
    let jobs = args
        .jobs
        .map(|j| j as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut signals = Signals::install()?;
    let ledger = ctx
        .connect(|c| c.cleanup_wait(args.grace + Duration::from_secs(2)))
        .await?;
    // A temp path that may never be deleted (`/`, home, a mount point, the ledger) is an
    // input error, found before anything runs.
    for path in plan.workers.iter().flat_map(|w| &w.temp) {
        ledger.temp_resource_path(path)?;
    }
    // What a supervisor killed earlier left behind goes first.
    let recovered = super::recover::before_run(&ledger).await;
    let op = ledger
        .create_operation(OperationOptions::new().description(description))
        .await?;
    let output = Arc::new(Output::new(Mode::choose(ctx.json), plan.workers.len()));
    let _pauses = signals.show_pauses(output.clone());
    output.emit(Event::OperationStarted(OperationStarted {
        operation: op.operation_id().to_string(),
        ledger: ctx.ledger_label(),
        participant: op.participant_id().to_string(),
    }));
    for r in recovered {
        output.emit(Event::OperationRecovered(r));
    }

    let (interrupt_tx, mut interrupts) = mpsc::unbounded_channel();
    let cause = Arc::new(Mutex::new(None));
    let launcher: Arc<dyn WorkerLauncher> = Arc::new(ProcessLauncher);
    let workers: Vec<Arc<WorkerSpec>> = plan.workers.iter().cloned().map(Arc::new).collect();
    let schedule = Schedule {
        nodes: plan
            .workers
            .iter()
            .map(|w| Node {
                after: w.after.clone(),
                retries: w.retries,
                fatal: w.fail_on_crash,
            })
            .collect(),
        jobs,
        keep_going: args.keep_going,
    };
    let starter = Starter {
        op: op.clone(),
        launcher,
        output: output.clone(),
        grace: args.grace,
        max_line: args.max_line,
    };
    // The watcher never ends by itself; it runs beside the schedule in this task
    // (`Operation::failed` cannot move between threads).
    let watcher = watch_interrupts(
        &mut signals,
        op.clone(),
        args.timeout,
        interrupt_tx,
        cause.clone(),
    );
    let report = tokio::select! {
        report = schedule.run(|i, attempt| starter.start(workers[i].clone(), attempt), &mut interrupts) => report,
        never = watcher => match never {},
    };
    let mut cause = cause.lock().unwrap_or_else(|e| e.into_inner()).take();
    // The abort may reach the workers (through nested commands) before this process sees
    // it: the ledger says whether it happened.
    if cause.is_none() && op.check_abort().await.unwrap_or(false) {
        cause = Some(Cause::Aborted);
    }
    // Likewise a failure (a participant crashed): the workers it cancelled may end the
    // schedule before the watcher takes note.
    if cause.is_none()
        && let Some(info) = op.failure()
    {
        let reason = info.reason.unwrap_or_else(|| "the operation failed".into());
        cause = Some(Cause::OperationFailed(reason));
    }

    let skipped: Vec<String> = report
        .finals
        .iter()
        .zip(&workers)
        .filter(|(f, _)| **f == Final::Skipped)
        .map(|(_, w)| w.name.clone())
        .collect();
    let failed: Vec<&str> = report
        .finals
        .iter()
        .zip(&workers)
        .filter(|(f, w)| {
            w.fail_on_crash
                && matches!(
                    f,
                    Final::Done {
                        status: Status::Failed | Status::Timeout,
                        ..
                    }
                )
        })
        .map(|(_, w)| w.name.as_str())
        .collect();
    let id = op.operation_id().clone();
    let (exit, reason) = match &cause {
        Some(Cause::Signal(n)) => (Exit::Signal(*n), Some(cause_reason(&cause, &id))),
        Some(_) => (Exit::Failure, Some(cause_reason(&cause, &id))),
        None if report.failed => (
            Exit::Failure,
            Some(failure_reason(&failed, op.failure().and_then(|f| f.reason))),
        ),
        None => (Exit::Success, None),
    };
    let first_signal = match cause {
        Some(Cause::Signal(n)) => Some(n),
        _ => None,
    };
    // Recording the end is bounded; a signal while it runs ends the run at once (the
    // workers are gone by now; what is left is the ledger's part).
    let ending = end_operation(&ledger, &op, exit, reason, args.grace);
    tokio::pin!(ending);
    let (exit, reason, settled) = tokio::select! {
        (exit, reason) = &mut ending => (exit, reason, true),
        n = signals.next_stop() => {
            let n = first_signal.unwrap_or(n);
            let why = format!("interrupted by {} while the end was recorded", signal_name(n));
            (Exit::Signal(n), Some(why), false)
        }
    };
    // Whatever the ledger did, this run's own temp resources go.
    op.delete_local_temp_resources();
    output.emit(Event::OperationFinished(OperationFinished {
        operation: id.to_string(),
        state: if exit == Exit::Success {
            "completed"
        } else {
            "failed"
        }
        .to_string(),
        exit_code: exit.code(),
        duration_ms: begun.elapsed().as_millis() as u64,
        skipped,
        reason,
    }));
    if settled {
        // A heartbeat stuck on a ledger that does not answer does not hold up the exit.
        let _ = tokio::time::timeout(LEDGER_TRY, ledger.dispose()).await;
    }
    Ok(exit)
}

/// Why a run whose schedule failed failed: the fatal workers that did not succeed, else
/// what the ledger recorded (the operation failed around them), never an empty reason.
fn failure_reason(failed: &[&str], recorded: Option<String>) -> String {
    if !failed.is_empty() {
        return format!("failed: {}", failed.join(", "));
    }
    match recorded {
        Some(reason) if !reason.trim().is_empty() => reason,
        _ => "the operation failed before its workers finished".to_string(),
    }
}

/// Complete the operation, or fail it: its exit status and the reason it failed.
async fn end_operation(
    ledger: &Ledger,
    op: &Operation,
    mut exit: Exit,
    mut reason: Option<String>,
    grace: Duration,
) -> (Exit, Option<String>) {
    if exit == Exit::Success {
        match tokio::time::timeout(LEDGER_TRY, op.complete()).await {
            Ok(Ok(())) => return (exit, reason),
            Ok(Err(e)) => reason = Some(e.to_string()),
            Err(_) => reason = Some(format!("the ledger did not answer within {LEDGER_TRY:?}")),
        }
        exit = Exit::Failure;
    }
    let why = reason.clone().unwrap_or_default();
    end_failed(ledger, op, &why, grace).await;
    (exit, reason)
}

fn cause_reason(cause: &Option<Cause>, op: &OperationId) -> String {
    cause.as_ref().map(|c| c.reason(op)).unwrap_or_default()
}

/// Everything a worker attempt needs from the run.
struct Starter {
    op: Operation,
    launcher: Arc<dyn WorkerLauncher>,
    output: Arc<Output>,
    grace: Duration,
    /// Longest worker line shown whole above the progress display.
    max_line: usize,
}

impl Starter {
    fn start(&self, spec: Arc<WorkerSpec>, attempt: u32) -> Started {
        let (stop_tx, stop_rx) = stop_channel();
        let op = self.op.clone();
        let launcher = self.launcher.clone();
        let output = self.output.clone();
        let grace = self.grace;
        let max_line = self.max_line;
        let outcome = Box::pin(async move {
            let begun = Instant::now();
            for path in &spec.temp {
                if let Err(e) = op.register_temp_resource(path).await {
                    let o = WorkerOutcome {
                        call: None,
                        status: Status::Failed,
                        exit_code: None,
                        signal: None,
                        duration: begun.elapsed(),
                        error: Some(e.to_string()),
                        result: None,
                    };
                    output.emit(finished_event(&spec.name, attempt, &o));
                    return Status::Failed;
                }
            }
            let on_started = {
                let output = output.clone();
                let name = spec.name.clone();
                // The library's `CALL_SPAWNED` line names the worker and its pid.
                Box::new(move |s: StartedWorker| {
                    output.emit(Event::WorkerStarted(WorkerStarted {
                        name: name.clone(),
                        call: s.call.to_string(),
                        pid: s.pid,
                        attempt,
                    }));
                })
            };
            let routing = match output.mode() {
                Mode::Json => Routing::StdoutToStderr,
                Mode::Plain => Routing::Inherit,
                Mode::Progress => {
                    let output = output.clone();
                    let name = spec.name.clone();
                    let sink = move |line: &str| output.worker_line(&name, line);
                    Routing::Lines(Arc::new(sink), max_line)
                }
            };
            let launch = Launch {
                spec: spec.clone(),
                grace,
                stop: stop_rx,
                parent_call: None,
                // `run` applies its own failure policy (keep-going, fail_on_crash).
                fail_on_crash: false,
                description: spec.name.clone(),
                routing,
                on_started,
            };
            let o = launcher.run(&op, launch).await;
            // A success is in the log already (`CALL_COMPLETED`); anything else gets the
            // worker's status and attempt too.
            if let Some(call) = o.call.as_ref().filter(|_| o.status != Status::Ok) {
                let line = format!(
                    "WORKER_FINISHED callId={call} status={} attempt={attempt} name={}",
                    o.status.as_str(),
                    spec.name
                );
                let _ = op.log(&line, LogLevel::Warning).await;
            }
            output.emit(finished_event(&spec.name, attempt, &o));
            o.status
        });
        Started {
            outcome,
            stop: Box::new(move |mode| request_stop(&stop_tx, mode)),
        }
    }
}

fn finished_event(name: &str, attempt: u32, o: &WorkerOutcome) -> Event {
    Event::WorkerFinished(WorkerFinished {
        name: name.to_string(),
        call: o.call.as_ref().map(|c| c.to_string()),
        status: o.status,
        exit_code: o.exit_code,
        signal: o.signal,
        duration_ms: o.duration.as_millis() as u64,
        attempt,
        error: o.error.clone(),
        result: o.result.clone(),
    })
}

/// Turn signals, the abort flag, the operation's failure and the run's timeout into
/// interrupts of the schedule: the first stops, a second signal kills.
async fn watch_interrupts(
    signals: &mut Signals,
    op: Operation,
    timeout: Option<Duration>,
    tx: mpsc::UnboundedSender<Interrupt>,
    cause: Arc<Mutex<Option<Cause>>>,
) -> std::convert::Infallible {
    // The run's own timeout does not count time stopped by Ctrl+Z either.
    let deadline = timeout.map(|t| job_control().deadline(t));
    let (mut signalled, mut aborted, mut failed, mut timed_out) = (false, false, false, false);
    let record = |c: Cause, tx: &mpsc::UnboundedSender<Interrupt>, reason: StopReason| {
        let mut slot = cause.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(c);
        }
        let _ = tx.send(Interrupt::Stop(reason));
    };
    loop {
        tokio::select! {
            n = signals.next_stop() => {
                if signalled {
                    let _ = tx.send(Interrupt::Kill);
                } else {
                    signalled = true;
                    record(Cause::Signal(n), &tx, StopReason::Cancelled);
                }
            }
            _ = op.aborted(), if !aborted => {
                aborted = true;
                record(Cause::Aborted, &tx, StopReason::Cancelled);
            }
            info = op.failed(), if !failed => {
                failed = true;
                let reason = failure_reason(&[], info.reason);
                record(Cause::OperationFailed(reason), &tx, StopReason::Cancelled);
            }
            _ = job_control().sleep_until_opt(deadline.as_ref()), if deadline.is_some() && !timed_out => {
                timed_out = true;
                let t = timeout.unwrap_or_default();
                record(Cause::Timeout(t), &tx, StopReason::Timeout);
            }
        }
    }
}

/// Fail the operation (the library deletes temp resources and archives it) and wait,
/// bounded, until it is archived. One attempt: when the ledger refuses the failure or
/// does not answer (corrupt, read-only, full, deleted), nothing is waited for.
async fn end_failed(ledger: &Ledger, op: &Operation, reason: &str, grace: Duration) {
    let id = op.operation_id();
    match tokio::time::timeout(LEDGER_TRY, op.fail(reason)).await {
        Ok(Ok(())) | Ok(Err(Error::OperationEnded { .. })) => {}
        // Gone from the ledger: archived by someone, or the directory was deleted.
        Ok(Err(Error::OperationNotFound(_))) => return,
        Ok(Err(e)) => {
            tracing::warn!(operation = %id, error = %e, "failure not recorded in the ledger");
            return;
        }
        Err(_) => {
            tracing::warn!(operation = %id, "failure not recorded: the ledger did not answer within {LEDGER_TRY:?}");
            return;
        }
    }
    let bound = grace + Duration::from_secs(10);
    if !ledger.wait_archived(id, bound).await {
        tracing::warn!(operation = %id, "operation not archived (`tom-ledger recover` cleans it up)");
    }
}

#[cfg(test)]
mod tests {
    use super::failure_reason;

    #[test]
    fn a_failure_always_carries_a_reason() {
        assert_eq!(failure_reason(&["cc", "ld"], None), "failed: cc, ld");
        assert_eq!(
            failure_reason(&[], Some("participant `run-1` crashed".into())),
            "participant `run-1` crashed"
        );
        for recorded in [None, Some(String::new()), Some("  ".into())] {
            let reason = failure_reason(&[], recorded);
            assert!(
                !reason.trim().is_empty() && reason != "failed: ",
                "{reason:?}"
            );
        }
    }
}
