//! Looking inside the ledger: `ls`, `status`, `log` and `trace` never change it; `abort`
//! only sets the abort flag.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tom_dist_ledger::ledger::{FollowEnd, Followed, ListedOperation, OperationSummary};
use tom_dist_ledger::model::{LedgerData, time};
use tom_dist_ledger::store::LogKind;
use tom_dist_ledger::{Error, Ledger, ParticipantId};

use super::args::{LogArgs, OpArg, StatusArgs, TraceArgs};
use super::exit::{CliResult, Exit, Failure};
use super::{Context, operation_id};

/// Write to stdout; a closed pipe (`| head`) ends the output quietly.
pub(super) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

pub(super) fn json_line(value: &Value) {
    out(&format!("{value}\n"));
}

/// `12s ago`, `3m ago`, `2h ago`.
fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        0..120 => format!("{s}s ago"),
        120..7200 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn age_ms(now: DateTime<Utc>, then: DateTime<Utc>) -> i64 {
    (now - then).num_milliseconds().max(0)
}

/// Every operation, live and archived, oldest first; one that cannot be read is listed
/// with its error and does not hide the others.
pub async fn ls(ctx: &Context) -> CliResult {
    let Some(existing) = ctx.open_existing().await? else {
        return Ok(Exit::Success);
    };
    let mut ops = existing.ledger.list_all_operations().await?;
    ops.sort_by_cached_key(|op| (started(op), op.operation_id.clone()));
    for op in &ops {
        match (&op.summary, ctx.json) {
            (Ok(summary), true) => json_line(&summary_json(summary)),
            (Ok(summary), false) => out(&format!("{}\n", summary_line(summary))),
            (Err(error), true) => json_line(&unreadable_json(op, error)),
            (Err(error), false) => out(&format!(
                "{}  {:<9} {:<19} {error}\n",
                op.operation_id,
                if op.archived { "archived" } else { "live" },
                "unreadable",
            )),
        }
    }
    Ok(Exit::Success)
}

/// When an operation started: from its data, else from its id (generated ids begin with
/// the start time, `YYYYMMDDTHHMMSS.mmm`).
fn started(op: &ListedOperation) -> Option<DateTime<Utc>> {
    match &op.summary {
        Ok(summary) => Some(summary.start_time),
        Err(_) => {
            let prefix = op.operation_id.as_str().get(..19)?;
            chrono::NaiveDateTime::parse_from_str(prefix, "%Y%m%dT%H%M%S%.3f")
                .ok()
                .map(|t| t.and_utc())
        }
    }
}

fn unreadable_json(op: &ListedOperation, error: &str) -> Value {
    json!({
        "operation": op.operation_id.as_str(),
        "archived": op.archived,
        "state": Value::Null,
        "error": error,
    })
}

fn summary_json(op: &OperationSummary) -> Value {
    json!({
        "operation": op.operation_id.as_str(),
        "state": op.state.as_str(),
        "aborted": op.aborted,
        "archived": op.archived,
        "initiator": op.initiator_id.as_str(),
        "start_time": time::format(&op.start_time),
        "participants": op.participants,
        "call_frames": op.call_frames,
        "temp_resources": op.temp_resources,
        "description": op.description,
    })
}

fn summary_line(op: &OperationSummary) -> String {
    let state = if op.aborted {
        format!("{} (aborted)", op.state)
    } else {
        op.state.to_string()
    };
    let mut line = format!(
        "{}  {:<9} {:<19} {}  participants {}  frames {}  temp {}",
        op.operation_id,
        if op.archived { "archived" } else { "live" },
        state,
        time::format(&op.start_time),
        op.participants,
        op.call_frames,
        op.temp_resources,
    );
    if let Some(d) = op.description.as_deref().filter(|d| !d.is_empty()) {
        line.push_str(&format!("  {d}"));
    }
    line
}

pub async fn status(ctx: &Context, args: StatusArgs) -> CliResult {
    let requested = args.operation.as_deref().map(operation_id).transpose()?;
    let Some(existing) = ctx.open_existing().await? else {
        return match requested {
            Some(op) => Err(Error::OperationNotFound(op).into()),
            None => {
                if !ctx.json {
                    out("no live operations\n");
                }
                Ok(Exit::Success)
            }
        };
    };
    let ledger = &existing.ledger;
    let now = Utc::now();
    // The one asked for must be readable; of every live operation, one that is not is
    // shown with its error, in its place.
    let views: Vec<Result<(LedgerData, bool), (ListedOperation, String)>> = match requested {
        Some(op) => vec![Ok(ledger.read_operation(&op).await?)],
        None => {
            let mut views = Vec::new();
            // Only the live ones, each read once: the archive is not looked at.
            for id in ledger.list_live_operation_ids().await? {
                let view = match ledger.read_live(&id).await {
                    Ok(data) => Ok((data, false)),
                    Err(Error::OperationNotFound(_)) => continue,
                    Err(e) => {
                        let error = e.to_string();
                        let op = ListedOperation {
                            operation_id: id,
                            archived: false,
                            summary: Err(error.clone()),
                        };
                        Err((op, error))
                    }
                };
                views.push(view);
            }
            if views.is_empty() && !ctx.json {
                out("no live operations\n");
            }
            views
        }
    };
    for view in &views {
        match (view, ctx.json) {
            (Ok((data, archived)), true) => json_line(&status_json(ledger, data, *archived, now)),
            (Ok((data, archived)), false) => out(&status_text(ledger, data, *archived, now)),
            (Err((op, error)), true) => json_line(&unreadable_json(op, error)),
            (Err((op, error)), false) => out(&format!(
                "operation {}\n  unreadable   {error}\n",
                op.operation_id
            )),
        }
    }
    Ok(Exit::Success)
}

pub(super) fn participant_ids(data: &LedgerData) -> Vec<ParticipantId> {
    let mut ids: Vec<ParticipantId> = data.participants.keys().cloned().collect();
    for f in &data.call_frames {
        if !ids.contains(&f.participant_id) {
            ids.push(f.participant_id.clone());
        }
    }
    ids
}

fn status_json(ledger: &Ledger, data: &LedgerData, archived: bool, now: DateTime<Utc>) -> Value {
    let participants: Vec<Value> = participant_ids(data)
        .iter()
        .map(|id| {
            let alive = ledger.is_participant_alive(data, id);
            match data.participants.get(id) {
                Some(p) => json!({
                    "id": id.as_str(), "alive": alive, "pid": p.pid, "host": p.host,
                    "state": p.state, "epoch": p.epoch,
                    "joined_at": time::format(&p.joined_at),
                    "heartbeat_age_ms": age_ms(now, p.last_heartbeat),
                    "spawned_by": p.spawned_by,
                }),
                None => json!({"id": id.as_str(), "alive": alive}),
            }
        })
        .collect();
    let frames: Vec<Value> = data
        .call_frames
        .iter()
        .map(|f| {
            json!({
                "call": f.call_id.as_str(), "participant": f.participant_id.as_str(),
                "state": f.state, "description": f.description,
                "start_time": time::format(&f.start_time),
                "age_ms": age_ms(now, f.start_time),
                "fail_on_crash": f.fail_on_crash,
                "parent_call": f.parent_call_id,
                "process": f.process.as_ref().map(|p| json!({
                    "pid": p.pid, "pgid": p.pgid, "command": p.command,
                })),
            })
        })
        .collect();
    let temps: Vec<Value> = data
        .temp_resources
        .iter()
        .map(|t| {
            json!({"path": t.path, "owner": t.owner, "owner_id": t.owner_id,
            "registered_at": time::format(&t.registered_at)})
        })
        .collect();
    json!({
        "operation": data.operation_id.as_str(),
        "state": data.operation_state.as_str(),
        "aborted": data.aborted,
        "archived": archived,
        "initiator": data.initiator_id.as_str(),
        "description": data.description,
        "start_time": time::format(&data.start_time),
        "age_ms": age_ms(now, data.start_time),
        "failure": data.failure.as_ref().map(|f| &f.reason),
        "participants": participants,
        "participants_left": data.participants_left,
        "recently_left": data.recently_left.iter().map(|p| json!({
            "id": p.id.as_str(), "pid": p.pid,
            "joined_at": time::format(&p.joined_at), "left_at": time::format(&p.left_at),
        })).collect::<Vec<Value>>(),
        "frames": frames,
        "temp_resources": temps,
    })
}

fn status_text(ledger: &Ledger, data: &LedgerData, archived: bool, now: DateTime<Utc>) -> String {
    let mut s = format!(
        "operation {}\n  state        {}{}{}\n  initiator    {}\n  started      {} ({})\n",
        data.operation_id,
        data.operation_state,
        if data.aborted { ", aborted" } else { "" },
        if archived { ", archived" } else { "" },
        data.initiator_id,
        time::format(&data.start_time),
        ago(now, data.start_time),
    );
    if let Some(d) = data.description.as_deref().filter(|d| !d.is_empty()) {
        s.push_str(&format!("  description  {d}\n"));
    }
    if let Some(f) = &data.failure {
        s.push_str(&format!("  failure      {}\n", f.reason));
    }
    let ids = participant_ids(data);
    s.push_str(&format!("  participants ({})\n", ids.len()));
    for id in &ids {
        let alive = if ledger.is_participant_alive(data, id) {
            "alive"
        } else {
            "dead"
        };
        match data.participants.get(id) {
            Some(p) => s.push_str(&format!(
                "    {id}  {alive}  pid {} on {}  {}  heartbeat {}\n",
                p.pid,
                if p.host.is_empty() { "?" } else { &p.host },
                serde_json::to_value(p.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                ago(now, p.last_heartbeat),
            )),
            None => s.push_str(&format!("    {id}  {alive}  (not registered)\n")),
        }
    }
    if data.participants_left > 0 {
        let latest: Vec<&str> = data.recently_left.iter().map(|p| p.id.as_str()).collect();
        s.push_str(&format!(
            "  left in order {} (latest: {})\n",
            data.participants_left,
            latest.join(", ")
        ));
    }
    s.push_str(&format!("  frames ({})\n", data.call_frames.len()));
    for f in &data.call_frames {
        let process = f
            .process
            .as_ref()
            .map(|p| {
                format!(
                    "  process {} (group {}) `{}`",
                    p.pid,
                    p.pgid,
                    p.command.join(" ")
                )
            })
            .unwrap_or_default();
        let description = f
            .description
            .as_deref()
            .map(|d| format!("  {d}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "    {}  {}  started {}{}{}\n",
            f.call_id,
            f.participant_id,
            ago(now, f.start_time),
            process,
            description
        ));
    }
    s.push_str(&format!(
        "  temp resources ({})\n",
        data.temp_resources.len()
    ));
    for t in &data.temp_resources {
        let owner = t
            .owner_id
            .as_ref()
            .map(|o| o.to_string())
            .unwrap_or_else(|| format!("pid {}", t.owner));
        let path = tom_dist_ledger::model::TempResource::display_path(&t.path);
        s.push_str(&format!("    {path}  owner {owner}\n"));
    }
    s
}

pub async fn log(ctx: &Context, args: LogArgs) -> CliResult {
    let op = operation_id(&args.operation)?;
    let existing = ctx.open_for(&op).await?;
    if !args.follow {
        out(&existing.ledger.read_log(&op).await?);
        return Ok(Exit::Success);
    }
    // Ends with the operation: archived or ended (0), or abandoned by every participant
    // (1: nobody will write to it until `recover` cleans it up).
    let mut follower = existing.ledger.follow_log(&op, LogKind::Main);
    loop {
        match follower.next().await? {
            Followed::Text(text) => out(&text),
            Followed::End(FollowEnd::Abandoned { participants, .. }) => {
                let names: Vec<&str> = participants.iter().map(ParticipantId::as_str).collect();
                return Err(Failure::failed(format!(
                    "operation {op} was abandoned: its participants are all dead ({}); `tom-ledger recover` cleans it up",
                    names.join(", ")
                )));
            }
            Followed::End(_) => return Ok(Exit::Success),
        }
    }
}

pub async fn abort(ctx: &Context, args: OpArg) -> CliResult {
    let op = operation_id(&args.operation)?;
    let existing = ctx.open_for(&op).await?;
    let (data, archived) = existing.ledger.read_operation(&op).await?;
    if archived || data.operation_state.is_final() {
        return Err(Error::OperationEnded {
            operation: op,
            state: data.operation_state.to_string(),
        }
        .into());
    }
    existing.ledger.abort_operation(&op).await?;
    if ctx.json {
        json_line(&json!({"operation": op.as_str(), "aborted": true}));
    } else {
        out(&format!("abort requested for operation {op}\n"));
    }
    Ok(Exit::Success)
}

pub async fn trace(ctx: &Context, args: TraceArgs) -> CliResult {
    let op = operation_id(&args.operation)?;
    let existing = ctx.open_for(&op).await?;
    let (data, archived) = existing.ledger.read_operation(&op).await?;
    let log = match existing.ledger.read_log(&op).await {
        Ok(text) => text,
        Err(Error::OperationNotFound(_)) => String::new(),
        Err(e) => return Err(e.into()),
    };
    let trace = super::trace::build(&data, archived, &log, Utc::now());
    let text = format!("{trace}\n");
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::failed(format!("write `{}`: {e}", path.display())))?,
        None => out(&text),
    }
    Ok(Exit::Success)
}
