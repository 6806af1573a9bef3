//! An operation's timeline: its calls as spans with a start, an end and an outcome, per
//! participant, read from the operation log. `tom-ledger trace` writes it as Chrome
//! trace-event JSON; the status page draws it.
//!
//! Built from the log: `CALL_STARTED` / `CALL_SPAWNED` open a call;
//! `CALL_ENDED` / `CALL_COMPLETED` / `CALL_FAILED` / `CALL_CANCELLED` close it, and
//! `CRASH_CONTAINED` / `CRASH_DETECTED participant=P calls=[X, Y]` end the listed calls as
//! crashed; a spawned worker's `CALL_SPAWNED ... pid=P name=N` (or, in older logs, a
//! `WORKER_STARTED callId=X name=N pid=P` written by `run`) names it. Calls still open
//! end at `now` (live operation) or at the last log line (archived or ended). Frames that
//! the log does not show (written by other tools) are added as running calls.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::LedgerData;

/// How a call ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
    Cancelled,
    /// Its participant was found dead (`CRASH_CONTAINED`, `CRASH_DETECTED`).
    Crashed,
    /// Still open in a live operation.
    Running,
    /// Still open when the operation was archived.
    Unfinished,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Crashed => "crashed",
            Outcome::Running => "running",
            Outcome::Unfinished => "unfinished",
        }
    }
}

/// One call of one participant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub call: String,
    pub participant: String,
    /// The worker's name (`run`), else the frame's description.
    pub name: Option<String>,
    /// The worker process, as the log or the frame recorded it.
    pub pid: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub outcome: Outcome,
    /// The error of a failed call.
    pub error: Option<String>,
    /// `spawned` (a worker process started by its participant) or `call`.
    pub kind: &'static str,
    /// Within its participant, the lane the call is drawn on: the first lane free when
    /// it starts, so calls that overlap get lanes of their own.
    pub lane: usize,
}

/// The spans of one operation and the time they cover.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    /// The earliest start (the operation's, or an earlier call's).
    pub origin: DateTime<Utc>,
    /// The latest end (now for a live operation).
    pub end: DateTime<Utc>,
    /// Sorted by participant, then start.
    pub spans: Vec<Span>,
}

impl Timeline {
    /// The participants that have spans, sorted.
    pub fn participants(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.spans.iter().map(|s| s.participant.as_str()).collect();
        out.dedup();
        out
    }

    /// Calls per outcome: running (or unfinished), ok, failed (or cancelled).
    pub fn counts(&self) -> CallCounts {
        let mut counts = CallCounts::default();
        for s in &self.spans {
            match s.outcome {
                Outcome::Running | Outcome::Unfinished => counts.running += 1,
                Outcome::Ok => counts.done += 1,
                Outcome::Failed | Outcome::Cancelled | Outcome::Crashed => counts.failed += 1,
            }
        }
        counts
    }
}

/// How many calls run, ended well, ended badly (failed, cancelled or crashed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    pub running: usize,
    pub done: usize,
    pub failed: usize,
}

/// One log line: `{RFC3339} [LEVEL] message`.
fn parse_line(line: &str) -> Option<(DateTime<Utc>, &str)> {
    let (ts, rest) = line.split_once(' ')?;
    let ts = crate::model::time::parse(ts)?;
    let (_, message) = rest.split_once("] ")?;
    Some((ts, message))
}

/// The value of `key=` in a message (up to the next space).
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .split(' ')
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// The open spans a crash line ends: the calls it lists (`calls=[a, b]`), else every
/// open call of its participant.
fn crashed(message: &str, open: &BTreeMap<String, usize>, spans: &[Open]) -> Vec<usize> {
    let listed: Vec<&str> = message
        .split_once("calls=[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(ids, _)| {
            ids.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() {
        return listed
            .iter()
            .filter_map(|id| open.get(*id).copied())
            .collect();
    }
    let Some(participant) = field(message, "participant") else {
        return Vec::new();
    };
    open.values()
        .copied()
        .filter(|&i| spans[i].span.participant == participant)
        .collect()
}

/// A span while the log is read: its end is not known yet.
struct Open {
    span: Span,
    ended: Option<DateTime<Utc>>,
}

/// The timeline of an operation from its data and log; `now` ends open calls of a live
/// operation.
pub fn build(data: &LedgerData, archived: bool, log: &str, now: DateTime<Utc>) -> Timeline {
    let mut spans: Vec<Open> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut names: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut last = data.start_time;
    for (ts, message) in log.lines().filter_map(parse_line) {
        last = last.max(ts);
        let keyword = message.split(' ').next().unwrap_or("");
        if keyword == "CRASH_CONTAINED" || keyword == "CRASH_DETECTED" {
            for i in crashed(message, &open, &spans) {
                let entry = &mut spans[i];
                open.remove(&entry.span.call);
                entry.ended = Some(ts);
                entry.span.outcome = Outcome::Crashed;
                entry.span.error = message.split_once("reason=").map(|(_, r)| r.to_string());
            }
            continue;
        }
        let Some(call) = field(message, "callId") else {
            continue;
        };
        match keyword {
            "CALL_STARTED" | "CALL_SPAWNED" => {
                // A spawned worker's line names its pid and name (older logs: a
                // `WORKER_STARTED` line after it).
                if let Some(pid) = field(message, "pid") {
                    let name = field(message, "name").unwrap_or("").to_string();
                    names.insert(call.to_string(), (name, Some(pid.to_string())));
                }
                open.insert(call.to_string(), spans.len());
                spans.push(Open {
                    span: Span {
                        call: call.to_string(),
                        participant: field(message, "participant")
                            .unwrap_or("unknown")
                            .to_string(),
                        name: None,
                        pid: None,
                        start: ts,
                        end: ts,
                        outcome: Outcome::Running,
                        error: None,
                        kind: if keyword == "CALL_SPAWNED" {
                            "spawned"
                        } else {
                            "call"
                        },
                        lane: 0,
                    },
                    ended: None,
                });
            }
            "CALL_ENDED" | "CALL_COMPLETED" | "CALL_FAILED" | "CALL_CANCELLED" => {
                if let Some(i) = open.remove(call) {
                    let entry = &mut spans[i];
                    entry.ended = Some(ts);
                    entry.span.outcome = match keyword {
                        "CALL_FAILED" => Outcome::Failed,
                        "CALL_CANCELLED" => Outcome::Cancelled,
                        _ => Outcome::Ok,
                    };
                    if keyword == "CALL_FAILED" {
                        entry.span.error = message.split_once("error=").map(|(_, e)| e.to_string());
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
    let still_open = if archived {
        Outcome::Unfinished
    } else {
        Outcome::Running
    };
    let mut spans: Vec<Span> = spans
        .into_iter()
        .map(|o| {
            let mut span = o.span;
            match o.ended {
                Some(end) => span.end = end,
                None => {
                    span.outcome = still_open;
                    span.end = end_of_open;
                }
            }
            span
        })
        .collect();
    // Frames still open that the log does not show (written by other tools).
    for f in &data.call_frames {
        if !spans.iter().any(|s| s.call == f.call_id.as_str()) {
            spans.push(Span {
                call: f.call_id.to_string(),
                participant: f.participant_id.to_string(),
                name: f.description.clone(),
                pid: f.process.as_ref().map(|p| p.pid.to_string()),
                start: f.start_time,
                end: end_of_open.max(f.start_time),
                outcome: Outcome::Running,
                error: None,
                kind: "call",
                lane: 0,
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
        s.end = s.end.max(s.start);
    }
    spans.sort_by(|a, b| (&a.participant, a.start).cmp(&(&b.participant, b.start)));
    assign_lanes(&mut spans);
    let origin = spans
        .iter()
        .map(|s| s.start)
        .chain([data.start_time])
        .min()
        .unwrap_or(data.start_time);
    Timeline {
        origin,
        end: last.max(end_of_open),
        spans,
    }
}

/// Lanes per participant: a call goes on the first lane that is free when it starts
/// (`spans` sorted by participant, then start).
fn assign_lanes(spans: &mut [Span]) {
    let mut lanes: Vec<DateTime<Utc>> = Vec::new();
    let mut participant: Option<String> = None;
    for s in spans {
        if participant.as_deref() != Some(s.participant.as_str()) {
            participant = Some(s.participant.clone());
            lanes.clear();
        }
        let lane = match lanes.iter().position(|&free| free <= s.start) {
            Some(l) => l,
            None => {
                lanes.push(s.start);
                lanes.len() - 1
            }
        };
        lanes[lane] = s.end;
        s.lane = lane;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{OperationId, ParticipantId};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn data(op: &str) -> LedgerData {
        LedgerData::new(
            OperationId::parse(op).expect("op"),
            ParticipantId::parse("run-1").expect("participant"),
            at("2026-01-01T00:00:00Z"),
        )
    }

    const LOG: &str = "\
2026-01-01T00:00:00.000Z [INFO] OPERATION_CREATED initiator=run-1 description=
2026-01-01T00:00:01.000Z [INFO] CALL_SPAWNED callId=c1 participant=run-1
2026-01-01T00:00:01.100Z [INFO] WORKER_STARTED callId=c1 pid=42 name=build
2026-01-01T00:00:01.500Z [INFO] CALL_SPAWNED callId=c2 participant=run-1 pid=43 name=test
2026-01-01T00:00:02.000Z [INFO] CALL_STARTED callId=c3 participant=exec-7
2026-01-01T00:00:03.000Z [INFO] CALL_COMPLETED callId=c1
2026-01-01T00:00:03.500Z [ERROR] CALL_FAILED callId=c2 error=exit status 3
garbage line
2026-01-01T00:00:04.000Z [INFO] CALL_ENDED callId=c3 duration=2000ms
2026-01-01T00:00:05.000Z [INFO] CALL_SPAWNED callId=c4 participant=run-1
2026-01-01T00:00:05.500Z [INFO] CALL_STARTED callId=c5 participant=exec-8
2026-01-01T00:00:06.000Z [WARN] CRASH_CONTAINED participant=exec-8 calls=[c5] reason=process 8 exited
";

    #[test]
    fn calls_are_read_from_the_log_with_outcomes_names_and_lanes() {
        let t = build(&data("op1"), false, LOG, at("2026-01-01T00:01:00Z"));
        assert_eq!(t.spans.len(), 5);
        let by = |call: &str| t.spans.iter().find(|s| s.call == call).expect("span");
        let c1 = by("c1");
        assert_eq!(c1.name.as_deref(), Some("build"));
        assert_eq!(c1.pid.as_deref(), Some("42"));
        assert_eq!((c1.outcome, c1.lane), (Outcome::Ok, 0));
        let c2 = by("c2");
        assert_eq!(
            (c2.name.as_deref(), c2.pid.as_deref()),
            (Some("test"), Some("43")),
            "a spawn line names its worker"
        );
        assert_eq!(c2.outcome, Outcome::Failed);
        assert_eq!(c2.error.as_deref(), Some("exit status 3"));
        assert_eq!(c2.lane, 1, "overlapping calls get their own lanes");
        assert_eq!(by("c4").lane, 0, "a free lane is reused");
        assert_eq!(
            by("c4").end,
            at("2026-01-01T00:01:00Z"),
            "open calls end now"
        );
        assert_eq!(by("c3").lane, 0, "lanes are per participant");
        let c5 = by("c5");
        assert_eq!(c5.outcome, Outcome::Crashed, "a crash line ends its calls");
        assert_eq!(c5.end, at("2026-01-01T00:00:06Z"));
        assert_eq!(c5.error.as_deref(), Some("process 8 exited"));
        assert_eq!(t.participants(), vec!["exec-7", "exec-8", "run-1"]);
        assert_eq!(
            t.counts(),
            CallCounts {
                running: 1,
                done: 2,
                failed: 2
            }
        );
    }

    #[test]
    fn open_calls_of_an_archived_operation_end_at_its_last_line() {
        let t = build(&data("op2"), true, LOG, at("2026-01-01T00:01:00Z"));
        let c4 = t.spans.iter().find(|s| s.call == "c4").expect("c4");
        assert_eq!(c4.outcome, Outcome::Unfinished);
        assert_eq!(c4.end, at("2026-01-01T00:00:06Z"));
        assert_eq!(t.end, at("2026-01-01T00:00:06Z"));
    }
}
