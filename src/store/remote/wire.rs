//! The native API's wire format (`/v1/`), shared by `tom-ledger serve` and the client
//! store so both sides read and write the same shapes. Everything here is JSON; an
//! operation travels as the same `LedgerData` document the file store keeps, its revision
//! as an `ETag` (`"{revision}"`).

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{FrameChange, LedgerData, OperationState};
use crate::revision::Revision;

use super::super::{ListEntry, LogKind, OperationSummary};

/// The service name `/status` reports, which discovery checks.
pub const SERVICE: &str = "tom_dist_ledger";

/// Query value of a compare-and-swap that only refreshes heartbeats.
pub const KIND_REFRESH: &str = "refresh";

/// The `ETag` / `If-Match` value of a revision.
pub fn etag(revision: Revision) -> String {
    format!("\"{}\"", revision.get())
}

/// The revision an `ETag` / `If-Match` names; the header is input.
pub fn parse_etag(value: &str) -> Result<Revision> {
    let trimmed = value.trim();
    let inner = trimmed
        .strip_prefix("W/")
        .unwrap_or(trimmed)
        .trim_matches('"');
    inner
        .parse::<u64>()
        .map(Revision::new)
        .map_err(|_| Error::invalid(format!("revision `{value}`"), "not a number in quotes"))
}

/// The path segment of a log.
pub fn log_segment(kind: LogKind) -> &'static str {
    match kind {
        LogKind::Main => "main",
        LogKind::Debug => "debug",
    }
}

/// The log a path segment names.
pub fn parse_log_segment(segment: &str) -> Result<LogKind> {
    match segment {
        "main" => Ok(LogKind::Main),
        "debug" => Ok(LogKind::Debug),
        other => Err(Error::invalid(
            format!("log `{other}`"),
            "expected `main` or `debug`",
        )),
    }
}

/// `GET /status`: what discovery checks, in the original's shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    pub service: String,
    pub version: String,
    pub status: String,
    pub port: u16,
    /// The ledger directory served, when it is one (clients on this machine find the
    /// token beside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    pub timestamp: String,
}

/// A list of operation ids (`GET /v1/operations`, `GET /v1/archived`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdsBody {
    pub operations: Vec<OperationId>,
}

/// One operation's head in `GET /v1/summaries`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryBody {
    pub operation_id: OperationId,
    pub archived: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryFields>,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The fields of an [`OperationSummary`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryFields {
    pub state: OperationState,
    pub aborted: bool,
    pub initiator_id: ParticipantId,
    #[serde(default)]
    pub description: Option<String>,
    pub start_time: Timestamp,
    pub participants: usize,
    pub call_frames: usize,
    pub temp_resources: usize,
    pub revision: u64,
}

impl SummaryBody {
    pub fn of(entry: &ListEntry) -> Self {
        let (summary, error) = match &entry.summary {
            Ok(s) => (
                Some(SummaryFields {
                    state: s.state,
                    aborted: s.aborted,
                    initiator_id: s.initiator_id.clone(),
                    description: s.description.clone(),
                    start_time: s.start_time,
                    participants: s.participants,
                    call_frames: s.call_frames,
                    temp_resources: s.temp_resources,
                    revision: s.revision.get(),
                }),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            operation_id: entry.operation_id.clone(),
            archived: entry.archived,
            summary,
            error,
        }
    }

    /// The entry as the store trait gives it; an unreadable one keeps the server's
    /// message.
    pub fn into_entry(self, location: &str) -> ListEntry {
        let summary = match (self.summary, self.error) {
            (Some(s), _) => Ok(OperationSummary {
                operation_id: self.operation_id.clone(),
                state: s.state,
                aborted: s.aborted,
                initiator_id: s.initiator_id,
                description: s.description,
                start_time: s.start_time,
                participants: s.participants,
                call_frames: s.call_frames,
                temp_resources: s.temp_resources,
                archived: self.archived,
                revision: Revision::new(s.revision),
            }),
            (None, error) => Err(Error::Unavailable {
                location: location.to_string(),
                reason: error.unwrap_or_else(|| "unreadable operation".to_string()),
            }),
        };
        ListEntry {
            operation_id: self.operation_id,
            archived: self.archived,
            summary,
        }
    }
}

/// `GET /v1/summaries`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SummariesBody {
    pub entries: Vec<SummaryBody>,
}

/// `GET /v1/operations/{op}/log/{kind}?from=N`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogBody {
    pub text: String,
    pub cursor: u64,
}

/// `POST /v1/operations/{op}/log/{kind}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppendBody {
    pub line: String,
}

/// The header of a compare-and-swap whose body also carries lines for the operation's
/// main log (value [`WITH_LINES_MAIN`]): the body is a [`LoggedWriteBody`], and the server
/// appends the lines, in order, after the write and before it answers; a refused write
/// appends none. Without the header the body is the operation alone.
pub const WITH_LINES_HEADER: &str = "x-with-lines";

/// The only value of [`WITH_LINES_HEADER`]: the lines go to the main log.
pub const WITH_LINES_MAIN: &str = "main";

/// The header of a written [`LoggedWriteBody`] whose lines could not all be appended
/// (the write stands): why.
pub const LINES_FAILED_HEADER: &str = "x-lines-failed";

/// Most lines one write carries.
pub const MAX_LINES_WITH_WRITE: usize = 100;

/// Longest line (bytes) one write carries.
pub const MAX_LINE_WITH_WRITE: usize = 64 * 1024;

/// `PUT /v1/operations/{op}` with [`WITH_LINES_HEADER`]: the operation and its log lines.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedWriteBody {
    pub data: LedgerData,
    pub lines: Vec<String>,
}

/// How many of `lines`, from the first, one write may carry (the rest are appended on
/// their own after it, so the order stays).
pub fn lines_for_write(lines: &[String]) -> usize {
    lines
        .iter()
        .take(MAX_LINES_WITH_WRITE)
        .take_while(|line| line.len() <= MAX_LINE_WITH_WRITE)
        .count()
}

/// Check the lines a write carries; the error names the wrong value.
pub fn check_lines_for_write(lines: &[String]) -> Result<()> {
    if lines.len() > MAX_LINES_WITH_WRITE {
        return Err(Error::invalid(
            format!("{} log lines with one write", lines.len()),
            format!("at most {MAX_LINES_WITH_WRITE}"),
        ));
    }
    if let Some((index, line)) = lines
        .iter()
        .enumerate()
        .find(|(_, line)| line.len() > MAX_LINE_WITH_WRITE)
    {
        return Err(Error::invalid(
            format!("log line {index} of {} bytes", line.len()),
            format!("at most {MAX_LINE_WITH_WRITE} bytes"),
        ));
    }
    Ok(())
}

/// `POST /v1/operations/{op}/frames`: a participant's frame change, applied by the server
/// to the operation as it is (under its own lock: writers of one operation never refuse
/// each other), and the lines for the main log once it is written (bounded as a
/// [`LoggedWriteBody`]'s).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameBody {
    pub change: FrameChange,
    #[serde(default)]
    pub lines: Vec<String>,
}

/// The 409 answer to a frame change the operation refuses: the error line, what refused
/// it (so the client returns the same error a change run on its side gives) and the
/// operation as it is (its revision is the answer's `ETag`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameRefusedBody {
    pub error: String,
    pub refusal: FrameRefusal,
    pub current: LedgerData,
}

/// Why the operation refused a frame change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum FrameRefusal {
    /// The writer is not an active participant at its epoch.
    Fenced {
        participant: ParticipantId,
        epoch: u64,
    },
    /// The operation has ended.
    Ended { state: String },
    /// The operation is failing: no call starts.
    Failed { reason: String },
}

impl FrameRefusal {
    /// The refusal an error of a frame change is, if it is one.
    pub fn of(e: &Error) -> Option<Self> {
        match e {
            Error::Fenced {
                participant, epoch, ..
            } => Some(Self::Fenced {
                participant: participant.clone(),
                epoch: *epoch,
            }),
            Error::OperationEnded { state, .. } => Some(Self::Ended {
                state: state.clone(),
            }),
            Error::OperationFailed { reason, .. } => Some(Self::Failed {
                reason: reason.clone(),
            }),
            _ => None,
        }
    }

    /// The error of `op` this refusal stands for.
    pub fn into_error(self, op: &OperationId) -> Error {
        let operation = op.clone();
        match self {
            Self::Fenced { participant, epoch } => Error::Fenced {
                operation,
                participant,
                epoch,
            },
            Self::Ended { state } => Error::OperationEnded { operation, state },
            Self::Failed { reason } => Error::OperationFailed { operation, reason },
        }
    }
}

/// `POST /v1/operations/{op}/archive`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchivedBody {
    pub location: String,
}

/// The header on every answer that carries an operation: the heartbeat ages of its
/// active participants by the server's clock (JSON, a list of [`HeartbeatAge`]).
pub const AGES_HEADER: &str = "x-heartbeat-ages";

/// One participant's heartbeat age, measured by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAge {
    pub participant: ParticipantId,
    #[serde(default)]
    pub host: String,
    pub pid: i32,
    pub epoch: u64,
    pub age_ms: u64,
    /// Whether it has beaten through this server at this epoch (else the age counts
    /// from the server's start).
    #[serde(default)]
    pub beaten: bool,
}

/// `POST /v1/operations/{op}/beat`: a participant is alive at this epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BeatBody {
    pub participant: ParticipantId,
    pub epoch: u64,
}

/// Error answers: one line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Request header of a compare-and-swap whose client wants the operation as it is in a
/// 412 answer (value [`CURRENT_ON_CONFLICT`]), so that its retry needs no read.
pub const ON_CONFLICT_HEADER: &str = "x-on-conflict";

/// The value of [`ON_CONFLICT_HEADER`] that asks for the current operation.
pub const CURRENT_ON_CONFLICT: &str = "current";

/// A 412 answer to a write that asked for [`CURRENT_ON_CONFLICT`]: the error and the
/// operation as it is (its revision is the answer's `ETag`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConflictBody {
    pub error: String,
    pub current: LedgerData,
}

/// One line of `GET /v1/operations/{op}/events` (JSON lines).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum EventLine {
    /// Sent first: the revision the stream starts at and the operation at it (read the
    /// operation if it is missing).
    #[serde(rename_all = "camelCase")]
    Hello {
        revision: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document: Option<Box<LedgerData>>,
    },
    /// The operation was written: its new revision and, when the server has it, the
    /// operation as written (so no watcher needs to read it again).
    #[serde(rename_all = "camelCase")]
    Changed {
        revision: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document: Option<Box<LedgerData>>,
    },
    /// The abort flag was set.
    #[serde(rename_all = "camelCase")]
    Abort { revision: Option<u64> },
    /// Call frames were declared crashed.
    #[serde(rename_all = "camelCase")]
    Crash {
        revision: Option<u64>,
        participants: Vec<ParticipantId>,
    },
    /// A participant's first beat at this epoch reached the server.
    #[serde(rename_all = "camelCase")]
    Joined {
        participant: ParticipantId,
        epoch: u64,
    },
    /// A participant's last beat is older than the stream's stale threshold (by the
    /// server's clock).
    #[serde(rename_all = "camelCase")]
    Expired {
        participant: ParticipantId,
        epoch: u64,
        age_ms: u64,
    },
    /// The operation was archived; the stream ends.
    #[serde(rename_all = "camelCase")]
    Archived { revision: Option<u64> },
    /// Changes may have been missed: read the operation again.
    Resync,
    /// Nothing happened (keeps idle connections from timing out).
    Ping,
}
