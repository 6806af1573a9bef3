//! `tom-ledger recover`: operations whose participants are all dead (a supervisor killed
//! with SIGKILL, a machine that rebooted) are cleaned up through the library's recovery:
//! the worker groups recorded in their call frames are stopped (only processes whose
//! identity matches the record are signalled), their temp resources deleted, and the
//! operation archived as failed. `run` does the same before it creates its own
//! operation. `--dry-run` only reports what would be recovered.

use std::io::Write;

use serde::Serialize;
use serde_json::json;
use std::path::Path;
use tom_dist_ledger::ledger::Recovered;

use tom_dist_ledger::{Error, Ledger, OperationId, ParticipantId};

use super::Context;
use super::args::RecoverArgs;
use super::exit::{CliResult, Exit};
use super::inspect::{json_line, out, participant_ids};
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
    for path in &report.removed_leftovers {
        leftover_line(ctx, path, true);
    }
    for (op, why) in &report.skipped {
        unrecoverable(ctx, op, why);
    }
    let nothing = report.recovered.is_empty()
        && report.skipped.is_empty()
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

/// Recover what dead participants left in the ledger before `run` creates its operation.
/// What could not be recovered is a warning on stderr, no reason not to run.
pub async fn before_run(ledger: &Ledger) -> Vec<OperationRecovered> {
    let warn = |text: String| {
        let _ = writeln!(std::io::stderr().lock(), "tom-ledger: warning: {text}");
    };
    match ledger.recover().await {
        Ok(report) => {
            for (op, why) in &report.skipped {
                warn(format!("cannot recover operation {op}: {why}"));
            }
            described(ledger, &report.recovered).await
        }
        Err(e) => {
            warn(format!("cannot look for operations to recover: {e}"));
            Vec::new()
        }
    }
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

/// What `recover` would do: the operations whose participants are all dead, unchanged.
async fn dry_run(ctx: &Context, ledger: &Ledger) -> CliResult {
    let mut found = 0;
    for id in ledger.abandoned_operations().await? {
        let data = match ledger.store().read(&id).await {
            Ok(d) => d,
            Err(Error::OperationNotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        found += 1;
        let ids = participant_ids(&data);
        let names: Vec<&str> = ids.iter().map(ParticipantId::as_str).collect();
        let workers = data
            .call_frames
            .iter()
            .filter(|f| f.process.is_some())
            .count();
        if ctx.json {
            json_line(&json!({
                "operation": id.as_str(), "state": data.operation_state.as_str(),
                "dead_participants": names, "call_frames": data.call_frames.len(),
                "recorded_workers": workers,
                "temp_resources": data.temp_resources.len(), "recovered": false,
            }));
        } else {
            out(&format!(
                "{id}  {}  every participant is dead ({})  frames {}  workers {workers}  temp {}  needs recovery\n",
                data.operation_state,
                if names.is_empty() {
                    "none registered".to_string()
                } else {
                    names.join(", ")
                },
                data.call_frames.len(),
                data.temp_resources.len(),
            ));
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
    if found == 0 && leftovers.is_empty() && unreadable == 0 && !ctx.json {
        out("nothing to recover\n");
    }
    Ok(if unreadable == 0 {
        Exit::Success
    } else {
        Exit::Failure
    })
}
