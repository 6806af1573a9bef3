//! What the status page shows, computed on the server: ages come from the server's
//! clock (the one clock remote participants' heartbeats are judged by), so a browser with
//! a wrong clock shows the same ages as everyone else.
//!
//! Liveness here is what the ledger says, for reading only: a participant is `crashed`
//! once it or one of its calls was declared crashed, `stale` when its heartbeat is older
//! than the default stale threshold but nobody has declared it yet, `paused` while it
//! records a job-control stop, `left` after it left in order, `ended` once the
//! operation has ended, else `alive`. The page never acts on it.

use serde::Serialize;

use crate::clock::{Timestamp, age_ms};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::ledger::DEFAULT_STALE_THRESHOLD;
use crate::model::{FrameState, LedgerData, ParticipantState, TempResource, time};
use crate::store::{LogCursor, LogKind};
use crate::timeline::{self, CallCounts, Outcome, Timeline};

use super::super::state::AppState;

/// Archived operations listed below the live ones, newest first.
const ARCHIVED_LISTED: usize = 20;

/// Log lines in one operation's view.
const LOG_TAIL_LINES: usize = 40;

/// One operation in the list.
#[derive(Clone, Debug, Serialize)]
pub struct OperationRow {
    pub operation: String,
    /// `running`, `cleanup`, `failed`, `completed`, or `unreadable`.
    pub state: String,
    pub aborted: bool,
    pub archived: bool,
    pub initiator: String,
    pub description: Option<String>,
    pub started: Option<String>,
    /// Since the start, by the server's clock (up to the end once archived).
    pub age_ms: u64,
    pub call_counts: CallCounts,
    /// Why the operation cannot be read, when it cannot.
    pub error: Option<String>,
}

/// The list: live operations, then the newest archived ones.
#[derive(Clone, Debug, Serialize)]
pub struct ListView {
    pub operations: Vec<OperationRow>,
    pub server_time: String,
}

/// One operation in detail.
#[derive(Clone, Debug, Serialize)]
pub struct OperationView {
    #[serde(flatten)]
    pub row: OperationRow,
    pub failure: Option<String>,
    pub participants: Vec<ParticipantView>,
    pub calls: Vec<CallView>,
    pub temps: Vec<TempView>,
    pub log_tail: Vec<String>,
    pub timeline: TimelineView,
    pub stale_threshold_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ParticipantView {
    pub id: String,
    pub host: String,
    pub pid: i32,
    /// `alive`, `stale`, `paused`, `crashed`, `left`, or `ended` (the operation ended
    /// while it was registered).
    pub liveness: &'static str,
    pub heartbeat_age_ms: u64,
    pub initiator: bool,
    pub epoch: u64,
    /// When it joined, in ms from the timeline's origin.
    pub joined_ms: u64,
}

/// A call with the worker process it runs (when it has one).
#[derive(Clone, Debug, Serialize)]
pub struct CallView {
    pub call: String,
    pub participant: String,
    pub name: Option<String>,
    pub outcome: Outcome,
    /// `active`, `crashed`, `cleaningUp`, `cleanedUp` for a call whose frame is open.
    pub frame: Option<&'static str>,
    pub pid: Option<String>,
    pub pgid: Option<i32>,
    pub command: Vec<String>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TempView {
    pub path: String,
    pub owner: String,
    pub age_ms: u64,
}

/// The timeline in ms from its origin, ready to draw.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineView {
    pub total_ms: u64,
    pub spans: Vec<SpanView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpanView {
    pub call: String,
    pub participant: String,
    pub name: String,
    pub outcome: Outcome,
    pub lane: usize,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Live operations (each read with its log, for its call counts), then the newest
/// archived ones.
pub async fn list(state: &AppState) -> Result<ListView> {
    let now = state.clock.now();
    let mut live = Vec::new();
    let mut archived = Vec::new();
    for entry in state.store.list_summaries().await? {
        let op = entry.operation_id;
        match entry.summary {
            Ok(summary) if entry.archived => archived.push((summary.start_time, op)),
            Ok(_) => live.push(row_of(state, &op, false, now).await),
            Err(e) => live.push(unreadable(&op, &e, entry.archived)),
        }
    }
    archived.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    let mut operations = live;
    for (_, op) in archived.into_iter().take(ARCHIVED_LISTED) {
        operations.push(row_of(state, &op, true, now).await);
    }
    Ok(ListView {
        operations,
        server_time: time::format(&now),
    })
}

/// One operation, live or archived.
pub async fn detail(state: &AppState, op: &OperationId) -> Result<OperationView> {
    let now = state.clock.now();
    let (data, archived) = read(state, op).await?;
    let log = read_log(state, op).await;
    let timeline = timeline::build(&data, archived, &log, now);
    let row = row(&data, archived, &timeline, now);
    let end = if archived || data.operation_state.is_final() {
        timeline.end
    } else {
        now
    };
    let mut tail: Vec<String> = log
        .lines()
        .rev()
        .take(LOG_TAIL_LINES)
        .map(String::from)
        .collect();
    tail.reverse();
    Ok(OperationView {
        row,
        failure: data.failure.as_ref().map(|f| f.reason.clone()),
        participants: participants(&data, &timeline, end, archived),
        calls: calls(&data, &timeline),
        temps: data.temp_resources.iter().map(|t| temp(t, now)).collect(),
        log_tail: tail,
        timeline: timeline_view(&timeline),
        stale_threshold_ms: DEFAULT_STALE_THRESHOLD.as_millis() as u64,
    })
}

/// The operation, live or else archived.
async fn read(state: &AppState, op: &OperationId) -> Result<(LedgerData, bool)> {
    match state.store.read(op).await {
        Ok(data) => Ok((data, false)),
        Err(Error::OperationNotFound(_)) => Ok((state.store.read_archived(op).await?, true)),
        Err(e) => Err(e),
    }
}

/// The whole main log; a log that cannot be read shows as empty (the page still shows
/// the operation's data).
async fn read_log(state: &AppState, op: &OperationId) -> String {
    match state
        .store
        .read_log(op, LogKind::Main, LogCursor::START)
        .await
    {
        Ok((text, _)) => text,
        Err(e) => {
            tracing::debug!(operation = %op, error = %e, "log not readable for the status page");
            String::new()
        }
    }
}

async fn row_of(
    state: &AppState,
    op: &OperationId,
    archived: bool,
    now: Timestamp,
) -> OperationRow {
    let data = if archived {
        state.store.read_archived(op).await
    } else {
        state.store.read(op).await
    };
    match data {
        Ok(data) => {
            let log = read_log(state, op).await;
            let timeline = timeline::build(&data, archived, &log, now);
            row(&data, archived, &timeline, now)
        }
        Err(e) => unreadable(op, &e, archived),
    }
}

fn row(data: &LedgerData, archived: bool, timeline: &Timeline, now: Timestamp) -> OperationRow {
    let end = if archived || data.operation_state.is_final() {
        timeline.end
    } else {
        now
    };
    OperationRow {
        operation: data.operation_id.to_string(),
        state: data.operation_state.as_str().to_string(),
        aborted: data.aborted,
        archived,
        initiator: data.initiator_id.to_string(),
        description: data.description.clone().filter(|d| !d.is_empty()),
        started: Some(time::format(&data.start_time)),
        age_ms: age_ms(end, data.start_time),
        call_counts: timeline.counts(),
        error: None,
    }
}

fn unreadable(op: &OperationId, e: &Error, archived: bool) -> OperationRow {
    OperationRow {
        operation: op.to_string(),
        state: "unreadable".to_string(),
        aborted: false,
        archived,
        initiator: String::new(),
        description: None,
        started: None,
        age_ms: 0,
        call_counts: CallCounts::default(),
        error: Some(e.to_string()),
    }
}

/// Each participant's liveness as the ledger records it; `now` is the end of an ended
/// operation, whose participants are no longer judged (`ended`).
fn participants(
    data: &LedgerData,
    timeline: &Timeline,
    now: Timestamp,
    archived: bool,
) -> Vec<ParticipantView> {
    let ended = archived || data.operation_state.is_final();
    let crashed_frames = |id: &crate::ids::ParticipantId| {
        data.call_frames
            .iter()
            .any(|f| &f.participant_id == id && f.state == FrameState::Crashed)
    };
    let crashed_record = |id: &crate::ids::ParticipantId| {
        data.failure
            .as_ref()
            .is_some_and(|f| f.crashed_participants.contains(id))
    };
    data.participants
        .iter()
        .map(|(id, p)| {
            let heartbeat_age_ms = age_ms(now, p.last_heartbeat);
            let liveness = match p.state {
                ParticipantState::Crashed => "crashed",
                _ if crashed_frames(id) || crashed_record(id) => "crashed",
                ParticipantState::Left => "left",
                ParticipantState::Active if ended => "ended",
                ParticipantState::Active if p.paused_at.is_some() => "paused",
                ParticipantState::Active
                    if heartbeat_age_ms > DEFAULT_STALE_THRESHOLD.as_millis() as u64 =>
                {
                    "stale"
                }
                ParticipantState::Active => "alive",
            };
            ParticipantView {
                id: id.to_string(),
                host: p.host.clone(),
                pid: p.pid,
                liveness,
                heartbeat_age_ms,
                initiator: id == &data.initiator_id,
                epoch: p.epoch,
                joined_ms: age_ms(p.joined_at, timeline.origin),
            }
        })
        .collect()
}

fn frame_state(state: FrameState) -> &'static str {
    match state {
        FrameState::Active => "active",
        FrameState::Crashed => "crashed",
        FrameState::CleaningUp => "cleaningUp",
        FrameState::CleanedUp => "cleanedUp",
    }
}

/// Every call of the timeline, with the process record of its frame while it is open.
fn calls(data: &LedgerData, timeline: &Timeline) -> Vec<CallView> {
    timeline
        .spans
        .iter()
        .map(|s| {
            let frame = data
                .call_frames
                .iter()
                .find(|f| f.call_id.as_str() == s.call);
            let process = frame.and_then(|f| f.process.as_ref());
            CallView {
                call: s.call.clone(),
                participant: s.participant.clone(),
                name: s.name.clone(),
                outcome: s.outcome,
                frame: frame.map(|f| frame_state(f.state)),
                pid: s.pid.clone().or_else(|| process.map(|p| p.pid.to_string())),
                pgid: process.map(|p| p.pgid),
                command: process.map(|p| p.command.clone()).unwrap_or_default(),
                error: s.error.clone(),
                duration_ms: age_ms(s.end, s.start),
            }
        })
        .collect()
}

fn temp(t: &TempResource, now: Timestamp) -> TempView {
    let path = TempResource::decode_path(&t.path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| t.path.clone());
    let owner = match &t.owner_id {
        Some(id) => format!("{id} (pid {})", t.owner),
        None => format!("pid {}", t.owner),
    };
    TempView {
        path,
        owner,
        age_ms: age_ms(now, t.registered_at),
    }
}

fn timeline_view(t: &Timeline) -> TimelineView {
    TimelineView {
        total_ms: age_ms(t.end, t.origin),
        spans: t
            .spans
            .iter()
            .map(|s| SpanView {
                call: s.call.clone(),
                participant: s.participant.clone(),
                name: s.name.clone().unwrap_or_else(|| s.call.clone()),
                outcome: s.outcome,
                lane: s.lane,
                start_ms: age_ms(s.start, t.origin),
                end_ms: age_ms(s.end, t.origin),
            })
            .collect(),
    }
}
