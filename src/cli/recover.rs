//! `tom-ledger recover`: operations whose participants are all dead (a supervisor killed
//! with SIGKILL, a machine that rebooted) are cleaned up through the library's recovery:
//! the worker processes recorded in their call frames are stopped (only those that prove
//! they belong to the record are signalled), their temp resources deleted, and the
//! operation archived as failed. `run` does the same before it creates its own
//! operation, but only for operations proven to be its own; it reports the others.
//! `--dry-run` lists every path that would be deleted and every process that would be
//! signalled.

use std::io::Write;

use serde::Serialize;
use serde_json::json;
use std::path::Path;

use tom_dist_ledger::ledger::{LeftAlone, PlannedRecovery, Recovered};
use tom_dist_ledger::{Ledger, OperationId, ParticipantId};

use super::Context;
use super::args::RecoverArgs;
use super::exit::{CliResult, Exit};
use super::inspect::{json_line, out};
use super::output::{OperationRecovered, recovered_line};

pub async fn recover(ctx: &Context, args: RecoverArgs) -> CliResult {
    let Some(existing) = ctx.open_existing().await? else {
        if !ctx.json {
            out("nothing to recover\n");
        }
        return Ok(Exit::Success);
    };
    let ledger = &existing.ledger;
    if args.dry_run {
        return dry_run(ctx, ledger).await;
    }
    let report = ledger.recover().await?;
    for r in described(ledger, &report.recovered).await {
        if ctx.json {
            let line = Line {
                recovered: &r,
                done: true,
            };
            if let Ok(text) = serde_json::to_string(&line) {
                out(&format!("{text}\n"));
            }
        } else {
            out(&format!("{}\n", recovered_line(&r)));
        }
    }
    for r in &report.recovered {
        for note in &r.untouched {
            warn(&format!(
                "operation {}: not touched: {note}",
                r.operation_id
            ));
        }
    }
    for path in &report.removed_leftovers {
        leftover_line(ctx, path, true);
    }
    for (op, why) in &report.skipped {
        unrecoverable(ctx, op, why);
    }
    for left in &report.left_alone {
        if ctx.json {
            json_line(&json!({
                "operation": left.operation_id.as_str(), "recovered": false,
                "left_alone": left.reason,
            }));
        }
        warn(&format!(
            "left operation {} alone: {}",
            left.operation_id, left.reason
        ));
    }
    let nothing = report.recovered.is_empty()
        && report.skipped.is_empty()
        && report.left_alone.is_empty()
        && report.removed_leftovers.is_empty();
    if nothing && !ctx.json {
        out("nothing to recover\n");
    }
    Ok(if report.skipped.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// An operation that cannot be recovered (unreadable, say): stderr, or a JSON line.
fn unrecoverable(ctx: &Context, op: &OperationId, why: &str) {
    if ctx.json {
        json_line(&json!({"operation": op.as_str(), "recovered": false, "error": why}));
    } else {
        super::print_error(&format!("cannot recover operation {op}: {why}"));
    }
}

/// A file left by a create that failed part-way: removed, or to be removed (`--dry-run`).
fn leftover_line(ctx: &Context, path: &Path, removed: bool) {
    let path = path.display().to_string();
    if ctx.json {
        json_line(&json!({"leftover": path, "removed": removed}));
    } else if removed {
        out(&format!("removed {path} (left by a create that failed)\n"));
    } else {
        out(&format!(
            "{path}  left by a create that failed  would be removed\n"
        ));
    }
}

/// A recovered operation as `recover --json` prints it, fields in order.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    recovered: &'a OperationRecovered,
    #[serde(rename = "recovered")]
    done: bool,
}

/// A warning on stderr, one line.
fn warn(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "tom-ledger: warning: {text}");
}

/// Recover what dead participants left in the ledger before `run` creates its operation:
/// only operations proven to be this user's, from this host, boot and PID namespace.
/// The others are reported, one line each, with the command that would clean them; what
/// could not be recovered is a warning too, no reason not to run.
pub async fn before_run(ledger: &Ledger) -> Vec<OperationRecovered> {
    match ledger.recover_automatically().await {
        Ok(report) => {
            for (op, why) in &report.skipped {
                warn(&format!("cannot recover operation {op}: {why}"));
            }
            for r in &report.recovered {
                for note in &r.untouched {
                    warn(&format!(
                        "operation {}: not touched: {note}",
                        r.operation_id
                    ));
                }
            }
            for left in &report.left_alone {
                warn(&left_alone_line(left));
            }
            described(ledger, &report.recovered).await
        }
        Err(e) => {
            warn(&format!("cannot look for operations to recover: {e}"));
            Vec::new()
        }
    }
}

/// An abandoned operation `run` did not touch, with the command that would clean it.
fn left_alone_line(left: &LeftAlone) -> String {
    format!(
        "operation {} looks abandoned but was not recovered automatically ({}); `tom-ledger recover --dry-run` shows what `tom-ledger recover` would do with it",
        left.operation_id, left.reason
    )
}

/// The recovered operations with the state they were archived in.
async fn described(ledger: &Ledger, recovered: &[Recovered]) -> Vec<OperationRecovered> {
    let mut out = Vec::with_capacity(recovered.len());
    for r in recovered {
        let mut described = OperationRecovered::from(r);
        if let Ok((data, _)) = ledger.read_operation(&r.operation_id).await {
            described.state = data.operation_state.as_str().to_string();
        }
        out.push(described);
    }
    out
}

/// What `recover` would do, changing nothing: per abandoned operation, every path it
/// would delete and every process it would signal, and what it would leave and why.
async fn dry_run(ctx: &Context, ledger: &Ledger) -> CliResult {
    let plans = ledger.recovery_plan().await?;
    for plan in &plans {
        if ctx.json {
            json_line(&plan_json(plan));
        } else {
            out(&plan_text(plan));
        }
    }
    // What `recover` would remove and what it could not recover: the same answers.
    let leftovers = ledger.failed_create_leftovers().await?;
    for path in &leftovers {
        leftover_line(ctx, path, false);
    }
    let mut unreadable = 0;
    for op in ledger.list_all_operations().await? {
        if let (false, Err(why)) = (op.archived, &op.summary) {
            unrecoverable(ctx, &op.operation_id, why);
            unreadable += 1;
        }
    }
    if plans.is_empty() && leftovers.is_empty() && unreadable == 0 && !ctx.json {
        out("nothing to recover\n");
    }
    Ok(if unreadable == 0 {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn plan_json(plan: &PlannedRecovery) -> serde_json::Value {
    let names: Vec<&str> = plan
        .participants
        .iter()
        .map(ParticipantId::as_str)
        .collect();
    let signal: Vec<serde_json::Value> = plan
        .signal
        .iter()
        .map(|p| json!({"pid": p.pid, "command": p.command}))
        .collect();
    json!({
        "operation": plan.operation_id.as_str(), "state": plan.state.as_str(),
        "dead_participants": names, "call_frames": plan.call_frames,
        "recorded_workers": plan.recorded_workers,
        "temp_resources": plan.temp_resources,
        "delete": plan.delete, "signal": signal, "untouched": plan.untouched,
        "left_alone": plan.left_alone, "automatic": plan.automatic,
        "recovered": false,
    })
}

/// The summary line, then one indented line per path, process and refusal.
fn plan_text(plan: &PlannedRecovery) -> String {
    let names: Vec<&str> = plan
        .participants
        .iter()
        .map(ParticipantId::as_str)
        .collect();
    let verdict = match &plan.left_alone {
        Some(_) => "left alone",
        None => "needs recovery",
    };
    let mut text = format!(
        "{}  {}  every participant is dead ({})  frames {}  workers {}  temp {}  {verdict}\n",
        plan.operation_id,
        plan.state,
        if names.is_empty() {
            "none registered".to_string()
        } else {
            names.join(", ")
        },
        plan.call_frames,
        plan.recorded_workers,
        plan.temp_resources,
    );
    if let Some(why) = &plan.left_alone {
        text.push_str(&format!("  left alone: {why}\n"));
    }
    for path in &plan.delete {
        text.push_str(&format!("  would delete {path}\n"));
    }
    for p in &plan.signal {
        text.push_str(&format!(
            "  would signal pid {} ({})\n",
            p.pid,
            p.command.join(" ")
        ));
    }
    for note in &plan.untouched {
        text.push_str(&format!("  would not touch: {note}\n"));
    }
    if plan.left_alone.is_none() && !plan.automatic {
        text.push_str("  not recovered by `run` on its own: not proven to come from this host, boot, PID namespace and user\n");
    }
    text
}
