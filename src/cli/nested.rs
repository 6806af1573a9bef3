//! Commands that take part in an operation someone else runs: `exec` runs a command as a
//! tracked call, `temp` registers or forgets temp resources. Inside a worker of
//! `tom-ledger run` they need no flags: `TOM_LEDGER_DIR`, `TOM_LEDGER_OPERATION` and
//! `TOM_LEDGER_CALL` say where to join.

use std::sync::Arc;

use tom_dist_ledger::ledger::{ENV_CALL, ENV_OPERATION};
use tom_dist_ledger::{CallId, Error, OperationId, OperationOptions};

use super::args::{ExecArgs, TempAction, TempArgs};
use super::error::CommandError;
use super::exit::{CliResult, Exit, Failure};
use super::launcher::{
    Launch, ProcessLauncher, Routing, WorkerLauncher, request_stop, stop_channel,
};
use super::plan::{Plan, command_line};
use super::run::Cause;
use super::schedule::{Status, StopMode, StopReason};
use super::signals::Signals;
use super::{Context, operation_id};

/// The operation to join: `--operation`, else `TOM_LEDGER_OPERATION`.
fn enclosing_operation(explicit: Option<&str>, command: &'static str) -> CliResult<OperationId> {
    if let Some(op) = explicit {
        return operation_id(op);
    }
    match std::env::var(ENV_OPERATION) {
        Ok(op) if !op.is_empty() => operation_id(&op),
        _ => Err(CommandError::NoOperation { command }.into()),
    }
}

/// The call whose worker started us (`TOM_LEDGER_CALL`), if it is a valid id and of the
/// operation we join: a worker of one operation taking part in another is, for that
/// other one, a participant from outside.
fn parent_call(joining: &OperationId) -> Option<CallId> {
    let enclosing = std::env::var(ENV_OPERATION).ok()?;
    if enclosing != joining.as_str() {
        return None;
    }
    std::env::var(ENV_CALL)
        .ok()
        .and_then(|c| CallId::parse(c).ok())
}

/// Refuse before joining when the operation is unknown or over: a join is a write.
async fn check_joinable(ledger: &tom_dist_ledger::Ledger, op: &OperationId) -> CliResult<()> {
    let (data, archived) = ledger.read_operation(op).await?;
    if archived || data.operation_state.is_final() {
        return Err(Error::OperationEnded {
            operation: op.clone(),
            state: data.operation_state.to_string(),
        }
        .into());
    }
    Ok(())
}

fn join_options(parent: &Option<CallId>) -> OperationOptions {
    match parent {
        Some(call) => OperationOptions::new().spawned_by(call.clone()),
        None => OperationOptions::new(),
    }
}

pub async fn exec(ctx: &Context, args: ExecArgs) -> CliResult {
    let op_id = enclosing_operation(args.operation.as_deref(), "exec")?;
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::failed(format!("cannot read the current directory: {e}")))?;
    let mut plan = Plan::single(&args.cmd, &cwd)?;
    let mut spec = plan.workers.remove(0);
    spec.timeout = args.timeout;
    let parent = parent_call(&op_id);
    // Inside a worker, a crash is reported to the worker's call (the participant is
    // spawned by it), which decides. From outside, nobody would report it: the frame is
    // fail-on-crash, so this process dying fails the operation, unless asked not to.
    // The command's own status goes to whoever started `exec`.
    let fail_on_crash = parent.is_none() && !args.no_fail_on_crash;
    let mut signals = Signals::install()?;
    let existing = ctx.open_for(&op_id).await?;
    let ledger = existing.ledger.clone();
    check_joinable(&ledger, &op_id).await?;
    let op = ledger.join_operation(&op_id, join_options(&parent)).await?;
    let (stop_tx, stop_rx) = stop_channel();
    let launcher = ProcessLauncher;
    let launch = Launch {
        spec: Arc::new(spec),
        grace: args.grace,
        stop: stop_rx,
        parent_call: parent,
        fail_on_crash,
        description: args.description.unwrap_or_else(|| command_line(&args.cmd)),
        routing: Routing::Inherit,
        on_started: Box::new(|_| {}),
    };
    let run = launcher.run(&op, launch);
    tokio::pin!(run);
    let mut cause: Option<Cause> = None;
    let mut watching = true;
    let outcome = loop {
        tokio::select! {
            o = &mut run => break o,
            n = signals.next_stop() => {
                if cause.is_some() {
                    request_stop(&stop_tx, StopMode::Kill);
                } else {
                    cause = Some(Cause::Signal(n));
                    request_stop(&stop_tx, StopMode::Graceful(StopReason::Cancelled));
                }
            }
            _ = op.aborted(), if watching => {
                watching = false;
                cause.get_or_insert(Cause::Aborted);
                request_stop(&stop_tx, StopMode::Graceful(StopReason::Cancelled));
            }
            info = op.failed(), if watching => {
                watching = false;
                let reason = info.reason.unwrap_or_else(|| "the operation failed".into());
                cause.get_or_insert(Cause::OperationFailed(reason));
                request_stop(&stop_tx, StopMode::Graceful(StopReason::Cancelled));
            }
        }
    };
    if let Err(e) = op.leave(true).await {
        tracing::debug!(operation = %op_id, error = %e, "leave");
    }
    ledger.dispose().await;
    match cause {
        Some(Cause::Signal(n)) => Ok(Exit::Signal(n)),
        Some(Cause::Aborted) => Err(Failure::failed(format!("operation `{op_id}` was aborted"))),
        // Stopped because the operation failed elsewhere; a command that ended by itself
        // (and may be what failed the operation) reports its own status below.
        Some(Cause::OperationFailed(reason)) if outcome.status == Status::Cancelled => {
            Err(Failure::failed(reason))
        }
        Some(Cause::OperationFailed(_) | Cause::Timeout(_)) | None => match outcome.status {
            Status::Ok => Ok(Exit::Success),
            // The command ran and ended with a status of its own: pass it through.
            Status::Failed if outcome.exit_code.is_some() || outcome.signal.is_some() => {
                Ok(Exit::of_process(outcome.exit_code, outcome.signal))
            }
            _ => Err(Failure::failed(format!(
                "`{}`: {}",
                command_line(&args.cmd),
                outcome
                    .error
                    .unwrap_or_else(|| outcome.status.as_str().into())
            ))),
        },
    }
}

pub async fn temp(ctx: &Context, args: TempArgs) -> CliResult {
    let op_id = enclosing_operation(args.operation.as_deref(), "temp")?;
    let (add, paths) = match &args.action {
        TempAction::Add { paths } => (true, paths),
        TempAction::Rm { paths } => (false, paths),
    };
    let existing = ctx.open_for(&op_id).await?;
    let ledger = existing.ledger.clone();
    if add {
        // Every path is checked before any is registered: one refused path changes nothing.
        for path in paths {
            ledger.temp_resource_path(path)?;
        }
    }
    check_joinable(&ledger, &op_id).await?;
    let op = ledger
        .join_operation(&op_id, join_options(&parent_call(&op_id)))
        .await?;
    let mut result = Ok(());
    for path in paths {
        result = if add {
            op.register_temp_resource(path).await
        } else {
            op.unregister_temp_resource(path).await
        };
        if result.is_err() {
            break;
        }
    }
    let left = op.leave(false).await;
    ledger.dispose().await;
    result?;
    left?;
    Ok(Exit::Success)
}
