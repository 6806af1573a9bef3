//! `tom-ledger trace OP`: the operation's timeline as Chrome trace-event JSON, which
//! Perfetto (ui.perfetto.dev) and chrome://tracing open.
//!
//! Built from the operation log: `CALL_STARTED` / `CALL_SPAWNED` open a call;
//! `CALL_ENDED` / `CALL_COMPLETED` / `CALL_FAILED` / `CALL_CANCELLED` close it, and
//! `WORKER_STARTED callId=X name=N pid=P` (written by `run`) names it. Calls still open
//! end at the time of the trace (live operation) or at the last log line (archived).
//!
//! Every participant is a trace process (`pid`), named after it; its calls are complete
//! events (`ph: "X"`, `ts`/`dur` in µs from the operation's start) on as many threads
//! (`tid`, "lane N") as it needs for calls that overlap without nesting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tom_dist_ledger::model::LedgerData;

#[derive(Clone, Debug, PartialEq)]
struct Span {
    call: String,
    participant: String,
    name: Option<String>,
    pid: Option<String>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    /// `ok`, `failed`, `cancelled`, `running`, `unfinished`.
    outcome: &'static str,
    error: Option<String>,
    kind: &'static str,
}

/// One log line: `{RFC3339} [LEVEL] message`.
fn parse_line(line: &str) -> Option<(DateTime<Utc>, &str)> {
    let (ts, rest) = line.split_once(' ')?;
    let ts = tom_dist_ledger::model::time::parse(ts)?;
    let (_, message) = rest.split_once("] ")?;
    Some((ts, message))
}

/// The value of `key=` in a message (up to the next space).
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .split(' ')
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// The Chrome trace of an operation from its data and log; `now` ends open calls of a
/// live operation.
pub fn build(data: &LedgerData, archived: bool, log: &str, now: DateTime<Utc>) -> Value {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut names: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut last = data.start_time;
    for (ts, message) in log.lines().filter_map(parse_line) {
        last = last.max(ts);
        let keyword = message.split(' ').next().unwrap_or("");
        let Some(call) = field(message, "callId") else {
            continue;
        };
        match keyword {
            "CALL_STARTED" | "CALL_SPAWNED" => {
                open.insert(call.to_string(), spans.len());
                spans.push(Span {
                    call: call.to_string(),
                    participant: field(message, "participant")
                        .unwrap_or("unknown")
                        .to_string(),
                    name: None,
                    pid: None,
                    start: ts,
                    end: None,
                    outcome: "running",
                    error: None,
                    kind: if keyword == "CALL_SPAWNED" {
                        "spawned"
                    } else {
                        "call"
                    },
                });
            }
            "CALL_ENDED" | "CALL_COMPLETED" | "CALL_FAILED" | "CALL_CANCELLED" => {
                if let Some(i) = open.remove(call) {
                    let span = &mut spans[i];
                    span.end = Some(ts);
                    span.outcome = match keyword {
                        "CALL_FAILED" => "failed",
                        "CALL_CANCELLED" => "cancelled",
                        _ => "ok",
                    };
                    if keyword == "CALL_FAILED" {
                        span.error = message.split_once("error=").map(|(_, e)| e.to_string());
                    }
                }
            }
            "WORKER_STARTED" => {
                let name = field(message, "name").unwrap_or("").to_string();
                names.insert(
                    call.to_string(),
                    (name, field(message, "pid").map(String::from)),
                );
            }
            _ => {}
        }
    }
    let end_of_open = if archived || data.operation_state.is_final() {
        last
    } else {
        now.max(last)
    };
    for i in open.into_values() {
        spans[i].outcome = if archived { "unfinished" } else { "running" };
        spans[i].end = Some(end_of_open);
    }
    // Frames still open that the log does not show (written by other tools).
    for f in &data.call_frames {
        if !spans.iter().any(|s| s.call == f.call_id.as_str()) {
            spans.push(Span {
                call: f.call_id.to_string(),
                participant: f.participant_id.to_string(),
                name: f.description.clone(),
                pid: f.process.as_ref().map(|p| p.pid.to_string()),
                start: f.start_time,
                end: Some(end_of_open.max(f.start_time)),
                outcome: "running",
                error: None,
                kind: "call",
            });
        }
    }
    for s in &mut spans {
        if let Some((name, pid)) = names.get(&s.call) {
            s.name = Some(name.clone()).filter(|n| !n.is_empty());
            s.pid = pid.clone();
        }
        if s.name.is_none()
            && let Some(f) = data
                .call_frames
                .iter()
                .find(|f| f.call_id.as_str() == s.call)
        {
            s.name = f.description.clone();
        }
    }
    events(data, &spans, last.max(end_of_open))
}

fn micros(origin: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
    (t - origin).num_microseconds().unwrap_or(0).max(0)
}

fn events(data: &LedgerData, spans: &[Span], end: DateTime<Utc>) -> Value {
    let origin = spans
        .iter()
        .map(|s| s.start)
        .chain([data.start_time])
        .min()
        .unwrap_or(data.start_time);
    let mut out = Vec::new();
    // pid 1: the operation itself.
    out.push(
        json!({"ph": "M", "name": "process_name", "pid": 1, "tid": 0,
        "args": {"name": format!("operation {}", data.operation_id)}}),
    );
    out.push(json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": 0, "args": {"name": "operation"}}));
    out.push(json!({"ph": "X", "name": data.operation_id.as_str(), "cat": "operation", "pid": 1, "tid": 0,
        "ts": micros(origin, data.start_time), "dur": micros(data.start_time, end),
        "args": {"state": data.operation_state.as_str(), "initiator": data.initiator_id.as_str()}}));
    let mut participants: Vec<&str> = spans.iter().map(|s| s.participant.as_str()).collect();
    participants.sort();
    participants.dedup();
    for (n, participant) in participants.iter().enumerate() {
        let pid = n as i64 + 2;
        out.push(
            json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
            "args": {"name": participant}}),
        );
        out.push(
            json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
            "args": {"sort_index": pid}}),
        );
        let mut mine: Vec<&Span> = spans
            .iter()
            .filter(|s| s.participant == *participant)
            .collect();
        mine.sort_by_key(|s| s.start);
        // Lanes: a call goes on the first lane that is free when it starts.
        let mut lanes: Vec<DateTime<Utc>> = Vec::new();
        for s in mine {
            let end = s.end.unwrap_or(s.start).max(s.start);
            let lane = match lanes.iter().position(|&free| free <= s.start) {
                Some(l) => l,
                None => {
                    lanes.push(s.start);
                    out.push(json!({"ph": "M", "name": "thread_name", "pid": pid,
                        "tid": lanes.len(), "args": {"name": format!("lane {}", lanes.len())}}));
                    lanes.len() - 1
                }
            };
            lanes[lane] = end;
            let mut args = json!({"call": s.call, "participant": s.participant,
                "outcome": s.outcome, "kind": s.kind});
            if let Some(p) = &s.pid {
                args["process"] = json!(p);
            }
            if let Some(e) = &s.error {
                args["error"] = json!(e);
            }
            out.push(
                json!({"ph": "X", "name": s.name.clone().unwrap_or_else(|| s.call.clone()),
                "cat": s.outcome, "pid": pid, "tid": lane + 1,
                "ts": micros(origin, s.start), "dur": micros(s.start, end), "args": args}),
            );
        }
    }
    json!({
        "traceEvents": out,
        "displayTimeUnit": "ms",
        "otherData": {
            "operation": data.operation_id.as_str(),
            "state": data.operation_state.as_str(),
            "start": tom_dist_ledger::model::time::format(&origin),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tom_dist_ledger::{OperationId, ParticipantId};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn calls_become_complete_events_on_lanes() {
        let op = OperationId::parse("op1").unwrap();
        let data = LedgerData::new(
            op,
            ParticipantId::parse("run-1").unwrap(),
            at("2026-01-01T00:00:00Z"),
        );
        let log = "\
2026-01-01T00:00:00.000Z [INFO] OPERATION_CREATED initiator=run-1 description=
2026-01-01T00:00:01.000Z [INFO] CALL_SPAWNED callId=c1 participant=run-1
2026-01-01T00:00:01.100Z [INFO] WORKER_STARTED callId=c1 pid=42 name=build
2026-01-01T00:00:01.500Z [INFO] CALL_SPAWNED callId=c2 participant=run-1
2026-01-01T00:00:02.000Z [INFO] CALL_STARTED callId=c3 participant=exec-7
2026-01-01T00:00:03.000Z [INFO] CALL_COMPLETED callId=c1
2026-01-01T00:00:03.500Z [ERROR] CALL_FAILED callId=c2 error=exit status 3
garbage line
2026-01-01T00:00:04.000Z [INFO] CALL_ENDED callId=c3 duration=2000ms
";
        let trace = build(&data, true, log, at("2026-01-01T00:01:00Z"));
        let events = trace["traceEvents"].as_array().unwrap();
        let calls: Vec<&Value> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] != "operation")
            .collect();
        assert_eq!(calls.len(), 3);
        let build_ = calls.iter().find(|e| e["name"] == "build").unwrap();
        assert_eq!(build_["ts"], 1_000_000);
        assert_eq!(build_["dur"], 2_000_000);
        assert_eq!(build_["args"]["process"], "42");
        let c2 = calls.iter().find(|e| e["name"] == "c2").unwrap();
        assert_eq!(c2["cat"], "failed");
        assert_eq!(c2["args"]["error"], "exit status 3");
        assert_ne!(
            c2["tid"], build_["tid"],
            "overlapping calls get their own lanes"
        );
        let c3 = calls.iter().find(|e| e["name"] == "c3").unwrap();
        assert_ne!(
            c3["pid"], build_["pid"],
            "one trace process per participant"
        );
        let names: Vec<&Value> = events
            .iter()
            .filter(|e| e["name"] == "process_name")
            .map(|e| &e["args"]["name"])
            .collect();
        assert!(names.contains(&&json!("exec-7")) && names.contains(&&json!("run-1")));
    }

    #[test]
    fn open_calls_end_now_when_live() {
        let op = OperationId::parse("op2").unwrap();
        let data = LedgerData::new(
            op,
            ParticipantId::parse("cli").unwrap(),
            at("2026-01-01T00:00:00Z"),
        );
        let log = "2026-01-01T00:00:01Z [INFO] CALL_STARTED callId=c1 participant=cli\n";
        let trace = build(&data, false, log, at("2026-01-01T00:00:11Z"));
        let call = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "c1")
            .unwrap()
            .clone();
        assert_eq!(call["dur"], 10_000_000);
        assert_eq!(call["cat"], "running");
    }
}
