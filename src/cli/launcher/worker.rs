//! The library call for one attempt: the plan's worker as an `ExecWorker` (the process
//! layer's `WorkerCommand` and `RunOptions`, the call's options, where its result comes
//! from), with its output routed as the run shows it.

use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use tom_dist_ledger::CallOptions;
use tom_dist_ledger::ledger::{ExecWorker, WorkerResult};
use tom_dist_ledger::process::{RunOptions, StdioMode, WorkerCommand};

use super::{Launch, MAX_STDOUT, Routing, StartedWorker};
use crate::cli::plan::{Kind, WorkerSpec};

/// The worker's result as the command reports it: JSON, a `file` result that is not
/// JSON as a string, nothing for a `command`.
pub type WorkerValue = Option<serde_json::Value>;

/// The worker's exit status, once the library has seen it (whatever the outcome).
#[derive(Clone, Default)]
pub struct ExitSlot(Arc<Mutex<Option<ExitStatus>>>);

impl ExitSlot {
    fn set(&self, status: ExitStatus) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    pub fn take(&self) -> Option<ExitStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The library call for `launch`, and where its exit status will be.
pub fn exec_worker(launch: Launch) -> (ExecWorker<WorkerValue>, ExitSlot) {
    let Launch {
        spec,
        grace,
        parent_call,
        fail_on_crash,
        description,
        routing,
        on_started,
        ..
    } = launch;
    let exit = ExitSlot::default();
    let recorded = exit.clone();
    let mut run = RunOptions::default()
        .grace(grace)
        .max_stdout(MAX_STDOUT)
        // A `file` worker's result stays where the plan says.
        .delete_result_file(false)
        .on_exit(move |status| recorded.set(status));
    if let Some(t) = spec.timeout {
        run = run.timeout(t);
    }
    if let Routing::Lines(f, max_line) = &routing {
        let mark = format!(" [line cut at {max_line} bytes: raise the limit with --max-line]");
        let (out, err) = (f.clone(), f.clone());
        run = run
            .max_line(*max_line, Some(mark))
            .on_stdout(move |line| out(line))
            .on_stderr(move |line| err(line));
    }
    let mut call = CallOptions::new()
        .description(description)
        // Failures are reported through the outcome; the caller applies its policy.
        .fail_on_crash(false);
    if let Some(parent) = parent_call {
        call = call.parent(parent);
    }
    let (result, decode) = result_of(&spec);
    let exec = ExecWorker::with_decoder(command(&spec, &routing), decode)
        .run(run)
        .call(call)
        .result(result)
        // Recorded on the frame: a crash of this process while the worker runs fails the
        // operation (the worker's own failure is in the outcome).
        .fail_operation_on_crash(fail_on_crash)
        .on_running(move |call, info| {
            on_started(StartedWorker {
                call: call.clone(),
                pid: info.pid,
            })
        });
    (exec, exit)
}

/// The worker's command: the program as resolved, `argv[0]` as written, the plan's
/// environment (the library adds the variables that let nested commands join).
fn command(spec: &WorkerSpec, routing: &Routing) -> WorkerCommand {
    let (out, err) = match routing {
        Routing::Inherit => (StdioMode::Inherit, StdioMode::Inherit),
        Routing::StdoutToStderr => (StdioMode::Stderr, StdioMode::Inherit),
        Routing::Lines(..) => (StdioMode::Piped, StdioMode::Piped),
    };
    let mut cmd = WorkerCommand::new(&spec.program)
        .current_dir(&spec.cwd)
        .stdin(StdioMode::Null)
        .stdout(out)
        .stderr(err);
    if let Some((name, args)) = spec.command.split_first() {
        cmd = cmd.arg0(name).args(args);
    }
    for (k, v) in &spec.env {
        cmd = cmd.env(k, v);
    }
    cmd
}

type Decode = Arc<dyn Fn(&str) -> Result<WorkerValue, String> + Send + Sync>;

/// Where the plan's kind of worker has its result, and how it is read.
fn result_of(spec: &WorkerSpec) -> (WorkerResult, Decode) {
    match (spec.kind, &spec.result_file) {
        (Kind::Stdio, _) => (
            WorkerResult::Stdout,
            Arc::new(|text: &str| {
                serde_json::from_str(text)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }),
        ),
        (Kind::File, Some(path)) => (
            WorkerResult::File(path.clone()),
            Arc::new(|text: &str| {
                Ok(Some(serde_json::from_str(text).unwrap_or_else(|_| {
                    serde_json::Value::String(text.to_string())
                })))
            }),
        ),
        (Kind::Command, _) | (Kind::File, None) => {
            (WorkerResult::ExitStatus, Arc::new(|_: &str| Ok(None)))
        }
    }
}
