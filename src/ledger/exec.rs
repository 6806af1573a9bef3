//! Exec workers: child processes run as spawned calls.
//!
//! Each worker runs in its own process group (its whole tree stops together), gets the
//! `TOM_LEDGER_*` variables so nested tools can join the operation, and is recorded in its
//! call frame (`process`: pid, pgid, start time, command) so that crash recovery can stop it
//! safely from another process later. Cancelling the call runs the stop ladder first;
//! `SpawnedCall::kill` signals the group.
//!
//! Caveats (see the process layer): a worker that calls `setsid` leaves the process group;
//! only the escape-proof mode ([`ExecWorker::escape_proof`]) catches it.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::ids::CallId;
use crate::model::ProcessRecord;
use crate::process::{
    RunOptions, RunOutput, Signal, WorkerCommand, WorkerInfo, run_file_result, run_stdio,
    signal_group,
};
use crate::store::StoreLocation;

use super::call::CallOptions;
use super::callbacks::CallCallback;
use super::operation::Operation;
use super::spawned::{SpawnMode, SpawnedCall};

/// Environment variables a worker gets so nested tools join the same operation.
pub const ENV_LEDGER_DIR: &str = "TOM_LEDGER_DIR";
pub const ENV_LEDGER_URL: &str = "TOM_LEDGER_URL";
pub const ENV_OPERATION: &str = "TOM_LEDGER_OPERATION";
pub const ENV_CALL: &str = "TOM_LEDGER_CALL";
pub const ENV_PARTICIPANT: &str = "TOM_LEDGER_PARTICIPANT";

type LineFn = Box<dyn FnMut(&str) + Send>;
type ExitFn = Box<dyn FnOnce(i32) + Send>;

/// A worker process to run as a call.
pub struct ExecWorker<T> {
    executable: OsString,
    arguments: Vec<OsString>,
    working_directory: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    description: Option<String>,
    timeout: Option<Duration>,
    grace: Option<Duration>,
    escape_proof: bool,
    max_stdout: Option<usize>,
    delete_result_file: bool,
    fail_on_crash: bool,
    callback: CallCallback<T>,
    on_stdout: Option<LineFn>,
    on_stderr: Option<LineFn>,
    on_exit: Option<ExitFn>,
}

impl<T: Send + 'static> ExecWorker<T> {
    pub fn new(executable: impl Into<OsString>) -> Self {
        Self {
            executable: executable.into(),
            arguments: Vec::new(),
            working_directory: None,
            env: Vec::new(),
            description: None,
            timeout: None,
            grace: None,
            escape_proof: false,
            max_stdout: None,
            delete_result_file: true,
            fail_on_crash: true,
            callback: CallCallback::default(),
            on_stdout: None,
            on_stderr: None,
            on_exit: None,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.arguments.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn working_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_directory = Some(dir.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Stop the tree and fail the call after this long.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Grace between SIGTERM and SIGKILL for this worker (default: the operation's).
    pub fn grace(mut self, g: Duration) -> Self {
        self.grace = Some(g);
        self
    }

    /// Linux: also stop descendants that left the process group with `setsid`.
    pub fn escape_proof(mut self, on: bool) -> Self {
        self.escape_proof = on;
        self
    }

    /// Stdio worker: most bytes of stdout accepted (default 16 MiB).
    pub fn max_stdout(mut self, bytes: usize) -> Self {
        self.max_stdout = Some(bytes);
        self
    }

    /// File worker: delete the result file once read (default true).
    pub fn delete_result_file(mut self, on: bool) -> Self {
        self.delete_result_file = on;
        self
    }

    pub fn fail_on_crash(mut self, on: bool) -> Self {
        self.fail_on_crash = on;
        self
    }

    pub fn callback(mut self, c: CallCallback<T>) -> Self {
        self.callback = c;
        self
    }

    /// Each stdout line (file workers; a stdio worker's stdout is its result).
    pub fn on_stdout(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(f));
        self
    }

    /// Each stderr line, whole even when it came in pieces.
    pub fn on_stderr(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(f));
        self
    }

    /// The exit code (128+N for death by signal N).
    pub fn on_exit(mut self, f: impl FnOnce(i32) + Send + 'static) -> Self {
        self.on_exit = Some(Box::new(f));
        self
    }
}

/// Turns a worker's output into the call's result.
pub type Decoder<T> = Arc<dyn Fn(&str) -> std::result::Result<T, String> + Send + Sync>;

fn json_decoder<T: DeserializeOwned>() -> Decoder<T> {
    Arc::new(|text: &str| serde_json::from_str(text).map_err(|e| e.to_string()))
}

enum Kind {
    Stdio,
    File(PathBuf),
}

impl Operation {
    /// Run a worker whose stdout is its JSON result and whose stderr is its log.
    pub fn exec_stdio_worker<T>(&self, worker: ExecWorker<T>) -> SpawnedCall<T>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.exec(worker, Kind::Stdio, json_decoder())
    }

    /// Like `exec_stdio_worker`, with your own decoder (`|s| Ok(s.to_string())` for text).
    pub fn exec_stdio_worker_with<T>(
        &self,
        worker: ExecWorker<T>,
        decode: impl Fn(&str) -> std::result::Result<T, String> + Send + Sync + 'static,
    ) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.exec(worker, Kind::Stdio, Arc::new(decode))
    }

    /// Run a worker that writes its JSON result to `result_file` (to `result_file.tmp`
    /// first, renamed when complete). The file is read once the worker has exited; exiting
    /// 0 without it fails the call at once.
    pub fn exec_file_result_worker<T>(
        &self,
        worker: ExecWorker<T>,
        result_file: impl Into<PathBuf>,
    ) -> SpawnedCall<T>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.exec(worker, Kind::File(result_file.into()), json_decoder())
    }

    /// Like `exec_file_result_worker`, with your own decoder.
    pub fn exec_file_result_worker_with<T>(
        &self,
        worker: ExecWorker<T>,
        result_file: impl Into<PathBuf>,
        decode: impl Fn(&str) -> std::result::Result<T, String> + Send + Sync + 'static,
    ) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.exec(worker, Kind::File(result_file.into()), Arc::new(decode))
    }

    /// Run a request to an already running server as a tracked call. `timeout` fails the
    /// call and drops the request; `cancel()` drops it too.
    pub fn exec_server_request<T, E, Fut>(
        &self,
        options: CallOptions<T>,
        timeout: Option<Duration>,
        request: Fut,
    ) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        let options = CallOptions {
            description: options.description.or(Some("Server request".into())),
            ..options
        };
        self.spawn_call(options, move |_| async move {
            match timeout {
                Some(t) => match tokio::time::timeout(t, request).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(Error::Timeout {
                        what: "server request".into(),
                        after: t,
                    }
                    .to_string()),
                },
                None => request.await.map_err(|e| e.to_string()),
            }
        })
    }

    fn exec<T>(&self, worker: ExecWorker<T>, kind: Kind, decode: Decoder<T>) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        let ExecWorker {
            executable,
            arguments,
            working_directory,
            env,
            description,
            timeout,
            grace,
            escape_proof,
            max_stdout,
            delete_result_file,
            fail_on_crash,
            callback,
            on_stdout,
            on_stderr,
            on_exit,
        } = worker;
        let default_description = match kind {
            Kind::Stdio => "Stdio worker",
            Kind::File(_) => "File result worker",
        };
        let options = CallOptions {
            description: description.or(Some(default_description.into())),
            fail_on_crash,
            callback,
            parent_call_id: None,
        };
        let grace = grace.unwrap_or_else(|| self.worker_grace());
        let location = self.shared.ledger.store.location();
        let operation = self.clone();
        self.spawn_tracked(options, SpawnMode::SelfManaged, move |ctx| async move {
            let mut cmd = WorkerCommand::new(&executable)
                .args(&arguments)
                .escape_proof(escape_proof);
            if let Some(dir) = &working_directory {
                cmd = cmd.current_dir(dir);
            }
            for (k, v) in nested_env(&location, &operation, &ctx.call_id) {
                cmd = cmd.env(k, v);
            }
            for (k, v) in &env {
                cmd = cmd.env(k, v);
            }
            let mut run = RunOptions::default().grace(grace).cancel(ctx.token.clone());
            if let Some(t) = timeout {
                run = run.timeout(t);
            }
            if let Some(limit) = max_stdout {
                run = run.max_stdout(limit);
            }
            run = run.delete_result_file(delete_result_file);
            if let Some(f) = on_stdout {
                run = run.on_stdout(f);
            }
            if let Some(f) = on_stderr {
                run = run.on_stderr(f);
            }
            if let Some(f) = on_exit {
                run = run.on_exit(move |status: ExitStatus| f(exit_code(status)));
            }
            // The frame is written once the process runs, with its identity in it. If that
            // write is refused (the operation failed, this participant was fenced), the
            // worker is stopped at once.
            let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel::<ProcessRecord>();
            let killer_ctx = ctx.killer_handle();
            run = run.on_spawn(move |info: &WorkerInfo| {
                let pgid = info.pgid;
                killer_ctx(Arc::new(move |sig: Signal| {
                    signal_group(pgid, Some(sig)).unwrap_or(false)
                }));
                let _ = spawned_tx.send(process_record(info));
            });
            let frame_written = async {
                match spawned_rx.await {
                    Ok(record) => {
                        let result = ctx.open_frame(Some(record)).await;
                        if result.is_err() {
                            ctx.token.cancel();
                        }
                        result
                    }
                    // Never spawned: the runner reports why.
                    Err(_) => Ok(()),
                }
            };
            let runner = async {
                match &kind {
                    Kind::Stdio => run_stdio(cmd, run).await,
                    Kind::File(path) => run_file_result(cmd, path, run).await,
                }
            };
            let (output, framed): (Result<RunOutput>, Result<()>) =
                tokio::join!(runner, frame_written);
            framed.map_err(|e| e.to_string())?;
            let output = match output {
                Ok(output) => output,
                Err(e) => return Err(with_crashed_participants(&ctx, e).await),
            };
            let text = String::from_utf8_lossy(&output.data);
            decode(&text).map_err(|reason| {
                Error::Decode {
                    call: ctx.call_id.clone(),
                    reason,
                }
                .to_string()
            })
        })
    }

    /// Grace between SIGTERM and SIGKILL for this operation's workers.
    pub fn worker_grace(&self) -> Duration {
        self.shared
            .local()
            .worker_grace
            .unwrap_or(self.shared.ledger.config.worker_grace)
    }

    /// Set the grace for workers of this operation started from now on.
    pub fn set_worker_grace(&self, grace: Duration) {
        self.shared.local().worker_grace = Some(grace);
    }

    /// The variables a worker of this operation gets (for tools that start their own).
    pub fn worker_env(&self, call: &CallId) -> Vec<(String, String)> {
        nested_env(&self.shared.ledger.store.location(), self, call)
    }
}

fn nested_env(location: &StoreLocation, op: &Operation, call: &CallId) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(4);
    match location {
        StoreLocation::Dir(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            env.push((
                ENV_LEDGER_DIR.to_string(),
                dir.to_string_lossy().into_owned(),
            ));
        }
        StoreLocation::Url(url) => env.push((ENV_LEDGER_URL.to_string(), url.clone())),
        StoreLocation::Etcd(_) | StoreLocation::Memory => {}
    }
    env.push((ENV_OPERATION.to_string(), op.operation_id().to_string()));
    env.push((ENV_CALL.to_string(), call.to_string()));
    env.push((ENV_PARTICIPANT.to_string(), op.participant_id().to_string()));
    env
}

/// What a call frame records of a worker the process layer started.
pub fn process_record(info: &WorkerInfo) -> ProcessRecord {
    ProcessRecord {
        pid: info.pid,
        pgid: info.pgid,
        start_ticks: info.identity.start_ticks,
        boot_id: info.identity.boot_id.clone(),
        pid_namespace: info.identity.pid_ns,
        command: info.command.clone(),
        cgroup: info
            .cgroup
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
    }
}

/// The error of a failed worker, naming the participants it started that died without
/// leaving (a nested `tom-ledger exec`, say): their crash is reported to this call.
async fn with_crashed_participants(ctx: &super::spawned::CallContext, error: Error) -> String {
    let shared = &ctx.operation.shared;
    let Ok(data) = shared.ledger.store.read(&shared.id).await else {
        return error.to_string();
    };
    let crashed: Vec<String> = data
        .participants
        .iter()
        .filter(|(_, p)| p.spawned_by.as_ref() == Some(&ctx.call_id))
        .filter(|(_, p)| p.state != crate::model::ParticipantState::Left)
        .map(|(id, _)| format!("`{id}`"))
        .collect();
    if crashed.is_empty() {
        error.to_string()
    } else {
        format!(
            "{error}; participant {} started by this call crashed",
            crashed.join(", ")
        )
    }
}

/// Exit code as a shell reports it: the code, or 128+N after signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}
