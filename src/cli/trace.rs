//! `tom-ledger trace OP`: the operation's timeline as Chrome trace-event JSON, which
//! Perfetto (ui.perfetto.dev) and chrome://tracing open.
//!
//! The timeline itself (calls read from the operation log, their outcomes and lanes) is
//! the library's ([`tom_dist_ledger::timeline`]); this module only writes it out.
//! Every participant is a trace process (`pid`), named after it; its calls are complete
//! events (`ph: "X"`, `ts`/`dur` in µs from the operation's start) on one thread
//! (`tid`, "lane N") per lane.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::timeline::{self, Timeline};

/// The Chrome trace of an operation from its data and log; `now` ends open calls of a
/// live operation.
pub fn build(data: &LedgerData, archived: bool, log: &str, now: DateTime<Utc>) -> Value {
    events(data, &timeline::build(data, archived, log, now))
}

fn micros(origin: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
    (t - origin).num_microseconds().unwrap_or(0).max(0)
}

fn events(data: &LedgerData, timeline: &Timeline) -> Value {
    let origin = timeline.origin;
    let mut out = Vec::new();
    // pid 1: the operation itself.
    out.push(
        json!({"ph": "M", "name": "process_name", "pid": 1, "tid": 0,
        "args": {"name": format!("operation {}", data.operation_id)}}),
    );
    out.push(json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": 0, "args": {"name": "operation"}}));
    out.push(json!({"ph": "X", "name": data.operation_id.as_str(), "cat": "operation", "pid": 1, "tid": 0,
        "ts": micros(origin, data.start_time), "dur": micros(data.start_time, timeline.end),
        "args": {"state": data.operation_state.as_str(), "initiator": data.initiator_id.as_str()}}));
    for (n, participant) in timeline.participants().iter().enumerate() {
        let pid = n as i64 + 2;
        out.push(
            json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
            "args": {"name": participant}}),
        );
        out.push(
            json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
            "args": {"sort_index": pid}}),
        );
        let mut lanes = 0;
        for s in timeline
            .spans
            .iter()
            .filter(|s| s.participant == *participant)
        {
            if s.lane >= lanes {
                lanes = s.lane + 1;
                out.push(json!({"ph": "M", "name": "thread_name", "pid": pid,
                    "tid": lanes, "args": {"name": format!("lane {lanes}")}}));
            }
            let mut args = json!({"call": s.call, "participant": s.participant,
                "outcome": s.outcome.as_str(), "kind": s.kind});
            if let Some(p) = &s.pid {
                args["process"] = json!(p);
            }
            if let Some(e) = &s.error {
                args["error"] = json!(e);
            }
            out.push(
                json!({"ph": "X", "name": s.name.clone().unwrap_or_else(|| s.call.clone()),
                "cat": s.outcome.as_str(), "pid": pid, "tid": s.lane + 1,
                "ts": micros(origin, s.start), "dur": micros(s.start, s.end), "args": args}),
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
