//! `tom-ledger run`: one operation, its workers scheduled through the DAG, and an end that
//! is always recorded: completed and archived on success; failed, temp resources deleted
//! and archived on failure, abort, timeout or signal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
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

/// SIGINT, SIGTERM and SIGHUP, caught from before the operation exists until the end.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> CliResult<Signals> {
        let make = |kind: SignalKind| {
            signal(kind).map_err(|e| Failure::failed(format!("cannot install signal handler: {e}")))
        };
        Ok(Signals {
            int: make(SignalKind::interrupt())?,
            term: make(SignalKind::terminate())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    /// The next signal's number.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            Some(()) = self.int.recv() => libc::SIGINT,
            Some(()) = self.term.recv() => libc::SIGTERM,
            Some(()) = self.hup.recv() => libc::SIGHUP,
        }
    }
}

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
            format!("run {}", args.cmd.join(" ")),
        ),
    };
    let jobs = args
        .jobs
        .map(|j| j as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let signals = Signals::install()?;
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
    output.emit(Event::OperationStarted(OperationStarted {
        operation: op.operation_id().to_string(),
        ledger: ctx.ledger_dir.display().to_string(),
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
    };
    // The watcher never ends by itself; it runs beside the schedule in this task
    // (`Operation::failed` cannot move between threads).
    let watcher = watch_interrupts(
        signals,
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
    let (mut exit, mut reason) = match &cause {
        Some(Cause::Signal(n)) => (Exit::Signal(*n), Some(cause_reason(&cause, &id))),
        Some(_) => (Exit::Failure, Some(cause_reason(&cause, &id))),
        None if report.failed => (
            Exit::Failure,
            Some(format!("failed: {}", failed.join(", "))),
        ),
        None => (Exit::Success, None),
    };
    if exit == Exit::Success
        && let Err(e) = op.complete().await
    {
        exit = Exit::Failure;
        reason = Some(e.to_string());
    }
    if exit != Exit::Success {
        let why = reason.clone().unwrap_or_default();
        end_failed(&ledger, &op, &why, args.grace).await;
    }
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
    ledger.dispose().await;
    Ok(exit)
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
}

impl Starter {
    fn start(&self, spec: Arc<WorkerSpec>, attempt: u32) -> Started {
        let (stop_tx, stop_rx) = stop_channel();
        let op = self.op.clone();
        let launcher = self.launcher.clone();
        let output = self.output.clone();
        let grace = self.grace;
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
                let op = op.clone();
                let name = spec.name.clone();
                Box::new(move |s: StartedWorker| {
                    output.emit(Event::WorkerStarted(WorkerStarted {
                        name: name.clone(),
                        call: s.call.to_string(),
                        pid: s.pid,
                        attempt,
                    }));
                    tokio::spawn(async move {
                        let line =
                            format!("WORKER_STARTED callId={} pid={} name={name}", s.call, s.pid);
                        let _ = op.log(&line, LogLevel::Info).await;
                    });
                })
            };
            let routing = match output.mode() {
                Mode::Json => Routing::StdoutToStderr,
                Mode::Plain => Routing::Inherit,
                Mode::Progress => {
                    let output = output.clone();
                    let name = spec.name.clone();
                    Routing::Lines(Arc::new(move |line: &str| output.worker_line(&name, line)))
                }
            };
            let launch = Launch {
                spec: spec.clone(),
                grace,
                stop: stop_rx,
                parent_call: None,
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
    mut signals: Signals,
    op: Operation,
    timeout: Option<Duration>,
    tx: mpsc::UnboundedSender<Interrupt>,
    cause: Arc<Mutex<Option<Cause>>>,
) -> std::convert::Infallible {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
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
            n = signals.recv() => {
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
                let reason = info.reason.unwrap_or_else(|| "the operation failed".into());
                record(Cause::OperationFailed(reason), &tx, StopReason::Cancelled);
            }
            _ = sleep_until(deadline), if deadline.is_some() && !timed_out => {
                timed_out = true;
                let t = timeout.unwrap_or_default();
                record(Cause::Timeout(t), &tx, StopReason::Timeout);
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Fail the operation (the library deletes temp resources and archives it) and wait,
/// bounded, until it is archived.
async fn end_failed(ledger: &Ledger, op: &Operation, reason: &str, grace: Duration) {
    if let Err(e) = op.fail(reason).await
        && !matches!(
            e,
            Error::OperationEnded { .. } | Error::OperationNotFound(_)
        )
    {
        tracing::warn!(operation = %op.operation_id(), error = %e, "failure not recorded");
    }
    let bound = grace + Duration::from_secs(10);
    if !wait_archived(ledger, op.operation_id(), bound).await {
        tracing::warn!(operation = %op.operation_id(), "operation not archived after {bound:?}");
    }
}

/// Wait until the operation has left the live ledger (archived).
pub async fn wait_archived(ledger: &Ledger, op: &OperationId, bound: Duration) -> bool {
    let store = ledger.store();
    let mut changes = store.watch(op).ok();
    let deadline = Instant::now() + bound;
    loop {
        if let Err(Error::OperationNotFound(_)) = store.read(op).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let tick = Duration::from_millis(25);
        match changes.as_mut() {
            Some(rx) => {
                let _ = tokio::time::timeout(tick, rx.changed()).await;
            }
            None => tokio::time::sleep(tick).await,
        }
    }
}
