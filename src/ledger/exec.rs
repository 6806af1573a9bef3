//! Exec workers: child processes run as spawned calls.
//!
//! Each worker runs in its own process group (its whole tree stops together), gets the
//! `TOM_LEDGER_*` variables so nested tools can join the operation, and is recorded in its
//! call frame (`process`: pid, pgid, start time, command) so that crash recovery can stop it
//! safely from another process later. Cancelling the call runs the stop ladder first;
//! `SpawnedCall::kill` signals the group.
//!
//! Caveats (see the process layer): a worker that calls `setsid` leaves the process group;
//! only the escape-proof mode (`WorkerCommand::escape_proof`) catches it.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::ids::{CallId, ParticipantId};
use crate::model::ProcessRecord;
use crate::process::{
    RunOptions, RunOutput, Signal, WorkerCommand, WorkerInfo, run_file_result, run_stdio,
    run_to_exit, signal_group,
};
use crate::store::StoreLocation;

use super::call::CallOptions;
use super::callbacks::BoxFuture;
use super::operation::Operation;
use super::spawned::{FrameWrite, SpawnMode, SpawnedCall};

/// Environment variables a worker gets so nested tools join the same operation.
pub const ENV_LEDGER_DIR: &str = "TOM_LEDGER_DIR";
pub const ENV_LEDGER_URL: &str = "TOM_LEDGER_URL";
/// etcd endpoints, comma-separated, and the ledger's key prefix in that cluster.
pub const ENV_LEDGER_ETCD: &str = "TOM_LEDGER_ETCD";
pub const ENV_LEDGER_ETCD_PREFIX: &str = "TOM_LEDGER_ETCD_PREFIX";
pub const ENV_OPERATION: &str = "TOM_LEDGER_OPERATION";
pub const ENV_CALL: &str = "TOM_LEDGER_CALL";
pub const ENV_PARTICIPANT: &str = "TOM_LEDGER_PARTICIPANT";

/// Where a worker's result comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerResult {
    /// Only its exit status: the call's result is decoded from an empty text; its
    /// stdout and stderr go where the command says.
    ExitStatus,
    /// Its stdout (bounded by `RunOptions::max_stdout`); stderr is its log.
    Stdout,
    /// The file it writes (to `path.tmp` first, renamed when complete), read once it
    /// has exited 0; exiting 0 without it fails the call at once.
    File(PathBuf),
}

/// Receives the call and the worker once the worker runs and its frame is written (a
/// worker that ends before that write is answered: once it has ended).
pub type RunningFn = Box<dyn FnOnce(&CallId, &WorkerInfo) + Send>;

/// A worker process to run as a call: the process layer's command and run options,
/// the call's options, and where its result comes from.
///
/// `run`'s cancellation token and `on_spawn` belong to the call (cancelling it stops the
/// worker; the spawn writes the frame); whatever is set there is replaced. A grace left
/// unset is the operation's ([`Operation::worker_grace`]).
pub struct ExecWorker<T> {
    pub command: WorkerCommand,
    pub run: RunOptions,
    pub call: CallOptions<T>,
    pub result: WorkerResult,
    /// Record on the frame that a crash of this process fails the operation, whatever
    /// `call.fail_on_crash` says (for callers that report the worker's own failure
    /// elsewhere but whose death nobody would report).
    pub fail_operation_on_crash: bool,
    decode: Decoder<T>,
    on_running: Option<RunningFn>,
}

impl<T: DeserializeOwned + Send + 'static> ExecWorker<T> {
    /// A worker whose result is decoded as JSON.
    pub fn new(command: WorkerCommand) -> Self {
        Self::with_decoder(command, json_decoder())
    }
}

impl<T: Send + 'static> ExecWorker<T> {
    /// A worker whose result text is decoded by `decode` (`|s| Ok(s.to_string())` for text).
    pub fn with_decoder(command: WorkerCommand, decode: Decoder<T>) -> Self {
        Self {
            command,
            run: RunOptions::default(),
            call: CallOptions::default(),
            result: WorkerResult::Stdout,
            fail_operation_on_crash: false,
            decode,
            on_running: None,
        }
    }

    pub fn run(mut self, options: RunOptions) -> Self {
        self.run = options;
        self
    }

    pub fn call(mut self, options: CallOptions<T>) -> Self {
        self.call = options;
        self
    }

    pub fn result(mut self, result: WorkerResult) -> Self {
        self.result = result;
        self
    }

    pub fn fail_operation_on_crash(mut self, on: bool) -> Self {
        self.fail_operation_on_crash = on;
        self
    }

    /// Called once the worker runs and its frame is written; for a worker that ends
    /// before that write is answered, once it has ended (before its outcome is out).
    pub fn on_running(mut self, f: impl FnOnce(&CallId, &WorkerInfo) + Send + 'static) -> Self {
        self.on_running = Some(Box::new(f));
        self
    }
}

/// Turns a worker's output into the call's result.
pub type Decoder<T> = Arc<dyn Fn(&str) -> std::result::Result<T, String> + Send + Sync>;

fn json_decoder<T: DeserializeOwned>() -> Decoder<T> {
    Arc::new(|text: &str| serde_json::from_str(text).map_err(|e| e.to_string()))
}

impl Operation {
    /// Run a worker whose stdout is its JSON result and whose stderr is its log.
    pub fn exec_stdio_worker<T>(&self, worker: ExecWorker<T>) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.exec_worker(worker.result(WorkerResult::Stdout))
    }

    /// Run a worker that writes its result to `result_file` (to `result_file.tmp`
    /// first, renamed when complete). The file is read once the worker has exited; exiting
    /// 0 without it fails the call at once.
    pub fn exec_file_result_worker<T>(
        &self,
        worker: ExecWorker<T>,
        result_file: impl Into<PathBuf>,
    ) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.exec_worker(worker.result(WorkerResult::File(result_file.into())))
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
                    Ok(r) => r.map_err(Error::from_work),
                    Err(_) => Err(Error::Timeout {
                        what: "server request".into(),
                        after: t,
                    }),
                },
                None => request.await.map_err(Error::from_work),
            }
        })
    }

    /// Run a worker process as a call: started with the process layer, recorded in the
    /// call's frame once it runs, stopped (its whole group) on timeout, cancellation or
    /// the operation's failure. The call fails with the runner's typed error
    /// ([`Error::WorkerFailed`] with the exit status, [`Error::Timeout`],
    /// [`Error::OutputTooLarge`], [`Error::ResultFileMissing`], [`Error::Spawn`],
    /// [`Error::Decode`], ...); a worker that fails while its operation is aborted ends
    /// the call as cancelled.
    pub fn exec_worker<T>(&self, worker: ExecWorker<T>) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
    {
        let ExecWorker {
            command,
            run,
            call,
            result,
            fail_operation_on_crash,
            decode,
            on_running,
        } = worker;
        let default_description = match result {
            WorkerResult::ExitStatus => "Worker",
            WorkerResult::Stdout => "Stdio worker",
            WorkerResult::File(_) => "File result worker",
        };
        let options = CallOptions {
            description: call.description.or(Some(default_description.into())),
            ..call
        };
        let grace = run.grace.unwrap_or_else(|| self.worker_grace());
        // What the work needs, boxed: the call's task and the work's future each keep
        // room for what their closure captured, for the worker's whole life.
        let setup = Box::new(Setup {
            command,
            run: run.grace(grace),
            result,
            decode,
            on_running,
            location: self.shared.ledger.store.location(),
            operation: self.clone(),
        });
        self.spawn_tracked(options, SpawnMode::SelfManaged, move |ctx| async move {
            let Setup {
                command,
                run,
                result,
                decode,
                on_running,
                location,
                operation,
            } = *setup;
            if fail_operation_on_crash {
                ctx.fail_operation_on_crash();
            }
            let mut cmd = command;
            for (k, v) in nested_env(&location, &operation, &ctx.call_id) {
                cmd = cmd.env(k, v);
            }
            drop((location, operation));
            // The frame is written once the process runs, with its identity in it: queued
            // for the group commit when this call's task next runs after the spawn (a
            // burst of starts is written together once it is over); the future that waits
            // holds only the answer. If that write is refused (the operation failed, this
            // participant was fenced), the worker is stopped at once.
            let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel::<ProcessRecord>();
            let killer_ctx = ctx.killer_handle();
            let spawned = Arc::new(std::sync::Mutex::new(None::<WorkerInfo>));
            let seen = spawned.clone();
            let run = run
                .cancel(ctx.token.clone())
                .on_spawn(move |info: &WorkerInfo| {
                    let pgid = info.pgid;
                    killer_ctx(Arc::new(move |sig: Signal| {
                        signal_group(pgid, Some(sig)).unwrap_or(false)
                    }));
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.clone());
                    let _ = spawned_tx.send(process_record(info));
                });
            let running = Arc::new(std::sync::Mutex::new(on_running));
            let frame_ctx = ctx.clone();
            let (frame_running, frame_seen) = (running.clone(), spawned.clone());
            let mut frame_written: FrameWrite = Box::pin(async move {
                // Never spawned: the runner reports why.
                let Ok(process) = spawned_rx.await else {
                    return Ok(());
                };
                let Some(queued) = frame_ctx.queue_frame(Some(process)) else {
                    return Ok(());
                };
                let written = queued.await;
                match &written {
                    Ok(()) => {
                        let info = frame_seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        if let Some(info) = info {
                            call_running(&frame_running, &frame_ctx.call_id, &info);
                        }
                    }
                    Err(_) => frame_ctx.token.cancel(),
                }
                written
            });
            // Built directly (not in an async block that would keep its own copies of the
            // command and options) and boxed: the run's future is the largest part of a
            // worker's call and lives as long as the worker.
            let mut runner: BoxFuture<'_, Result<RunOutput>> = match &result {
                WorkerResult::ExitStatus => Box::pin(run_to_exit(cmd, run)),
                WorkerResult::Stdout => Box::pin(run_stdio(cmd, run)),
                WorkerResult::File(path) => Box::pin(run_file_result(cmd, path, run)),
            };
            let first = tokio::select! {
                biased;
                written = &mut frame_written => First::Written(written),
                output = &mut runner => First::Ended(output),
            };
            let output: Result<RunOutput> = match first {
                // Answered while the worker runs: the write's future is freed now rather
                // than kept for the worker's whole life.
                First::Written(written) => {
                    drop(frame_written);
                    let output = runner.await;
                    written?;
                    output
                }
                // The worker ended before its frame write was answered: its outcome goes
                // out now, the write's answer comes with the call's end (a refusal ends
                // the call as cancelled). Whoever waits to hear that it ran hears it now.
                First::Ended(output) => {
                    let info = spawned.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(info) = info {
                        call_running(&running, &ctx.call_id, &info);
                    }
                    ctx.answer_frame_later(frame_written);
                    output
                }
            };
            let output = match output {
                Ok(output) => output,
                // Boxed: a store read, only on failure, kept out of the worker's future.
                Err(e) => return Err(Box::pin(worker_failure(&ctx, e)).await),
            };
            let text = String::from_utf8_lossy(&output.data);
            decode(&text).map_err(|reason| Error::Decode {
                call: ctx.call_id.clone(),
                reason,
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
        StoreLocation::Url(url) => {
            env.push((ENV_LEDGER_URL.to_string(), url.clone()));
            if let Some(token) = &op.shared.ledger.config.remote_token {
                env.push((super::ENV_LEDGER_TOKEN.to_string(), token.clone()));
            }
        }
        StoreLocation::Etcd { endpoints, prefix } => {
            env.push((ENV_LEDGER_ETCD.to_string(), endpoints.join(",")));
            env.push((ENV_LEDGER_ETCD_PREFIX.to_string(), prefix.clone()));
        }
        StoreLocation::Memory => {}
    }
    env.push((ENV_OPERATION.to_string(), op.operation_id().to_string()));
    env.push((ENV_CALL.to_string(), call.to_string()));
    env.push((ENV_PARTICIPANT.to_string(), op.participant_id().to_string()));
    env
}

/// Hand the call and its worker to the `on_running` callback, once.
fn call_running(slot: &std::sync::Mutex<Option<RunningFn>>, call: &CallId, info: &WorkerInfo) {
    let f = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(f) = f {
        f(call, info);
    }
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

/// What a worker's call needs once it runs, moved into its work in one box.
struct Setup<T> {
    command: WorkerCommand,
    run: RunOptions,
    result: WorkerResult,
    decode: Decoder<T>,
    on_running: Option<RunningFn>,
    location: StoreLocation,
    operation: Operation,
}

/// Which of a worker's frame write and its run finished first.
enum First {
    Written(Result<()>),
    Ended(Result<RunOutput>),
}

/// The error of a failed worker. A worker that failed while its operation is aborted
/// (a nested command that stopped on the abort) was cancelled, not broken: the call ends
/// as cancelled. Participants it started that died without leaving (a nested
/// `tom-ledger exec`, say) are named: their crash is reported to this call.
async fn worker_failure(ctx: &super::spawned::CallContext, error: Error) -> Error {
    let shared = &ctx.operation.shared;
    let Ok(data) = shared.ledger.store.read(&shared.id).await else {
        return error;
    };
    if data.aborted {
        ctx.token.cancel();
        return error;
    }
    let crashed: Vec<ParticipantId> = data
        .participants
        .iter()
        .filter(|(_, p)| p.spawned_by.as_ref() == Some(&ctx.call_id))
        .filter(|(_, p)| p.state != crate::model::ParticipantState::Left)
        .map(|(id, _)| id.clone())
        .collect();
    if crashed.is_empty() {
        error
    } else {
        Error::StartedParticipantsCrashed {
            error: Box::new(error),
            participants: crashed,
        }
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
