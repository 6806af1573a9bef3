//! `GET /v1/operations/{op}/events`: an operation's changes pushed as JSON lines, so a
//! remote participant learns of an abort, a crash declaration or the archive at once.
//!
//! The stream starts with `hello` and the operation's revision, then one line per change
//! of the store's watch: `changed` with the revision, plus `abort` when the flag was set
//! and `crash` when frames were newly declared crashed; `archived` ends it; `resync` when
//! the store's watch lost changes; `ping` while idle. Given `?staleMs=N`, the stream
//! also judges the participants' heartbeats by the server's clock (`beats.rs`):
//! `joined` at a participant's first beat at an epoch, `expired` once its last beat is
//! older than N ms. It ends when the store's watch
//! ends or the server shuts down; a client then reconnects and reads the operation anew.

use std::collections::BTreeSet;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::sync::mpsc;

use crate::ids::ParticipantId;
use crate::model::{FrameState, LedgerData};
use crate::store::remote::wire::EventLine;
use crate::store::{ChangeKind, ChangeStream};

use super::errors::ApiError;
use super::native::operation;
use super::state::AppState;

/// Lines queued for a slow reader before the stream stops waiting for it.
const LINES_QUEUED: usize = 64;

/// How often a stream with a stale threshold judges heartbeat ages.
const JUDGE_EVERY: Duration = Duration::from_millis(200);

pub async fn stream(
    State(state): State<AppState>,
    Path(op): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let op = operation(&op)?;
    let stale_ms = match query.get("staleMs") {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("staleMs `{raw}`: not a number of milliseconds"))
        })?),
    };
    // Watch first, then read: nothing written in between is missed.
    let changes = state.store.watch(&op)?;
    let first = state.store.read_versioned(&op).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(LINES_QUEUED);
    tokio::spawn(feed(state, op, changes, first.data, stale_ms, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// What the stream has told its reader so far.
struct Told {
    aborted: bool,
    crashed: BTreeSet<ParticipantId>,
    /// Participants announced joined / expired, at their epoch.
    joined: BTreeSet<(ParticipantId, u64)>,
    expired: BTreeSet<(ParticipantId, u64)>,
}

impl Told {
    fn of(data: &LedgerData) -> Self {
        Self {
            aborted: data.aborted,
            crashed: crashed(data),
            joined: BTreeSet::new(),
            expired: BTreeSet::new(),
        }
    }
}

/// Joined and expired participants by the server's heartbeat table.
fn presence_news(
    told: &mut Told,
    state: &AppState,
    data: &LedgerData,
    stale_ms: u64,
) -> Vec<EventLine> {
    let mut lines = Vec::new();
    for age in state.beats.ages(data, state.clock.now()) {
        let key = (age.participant.clone(), age.epoch);
        if age.age_ms > stale_ms {
            if told.expired.insert(key) {
                lines.push(EventLine::Expired {
                    participant: age.participant,
                    epoch: age.epoch,
                    age_ms: age.age_ms,
                });
            }
        } else if age.beaten && told.joined.insert(key) {
            lines.push(EventLine::Joined {
                participant: age.participant,
                epoch: age.epoch,
            });
        }
    }
    lines
}

fn crashed(data: &LedgerData) -> BTreeSet<ParticipantId> {
    data.call_frames
        .iter()
        .filter(|f| f.state == FrameState::Crashed)
        .map(|f| f.participant_id.clone())
        .collect()
}

/// Send one line; false once the reader is gone.
async fn send(tx: &mpsc::Sender<Result<Bytes, Infallible>>, line: &EventLine) -> bool {
    let Ok(mut text) = serde_json::to_vec(line) else {
        return false;
    };
    text.push(b'\n');
    tx.send(Ok(Bytes::from(text))).await.is_ok()
}

async fn feed(
    state: AppState,
    op: crate::ids::OperationId,
    mut changes: ChangeStream,
    first: LedgerData,
    stale_ms: Option<u64>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut shutdown = state.shutdown.clone();
    let mut told = Told::of(&first);
    let mut latest = first;
    let hello = EventLine::Hello {
        revision: Some(latest.seq),
    };
    if !send(&tx, &hello).await {
        return;
    }
    let mut idle = Duration::ZERO;
    loop {
        // With a stale threshold the stream wakes often to judge ages; a ping is sent
        // after a ping interval of silence either way.
        let wait = match stale_ms {
            Some(_) => JUDGE_EVERY,
            None => state.ping_interval,
        };
        let change = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tx.closed() => return,
            change = tokio::time::timeout(wait, changes.next()) => change,
        };
        let lines = match change {
            Err(_) => {
                idle += wait;
                let mut lines = match stale_ms {
                    Some(ms) => presence_news(&mut told, &state, &latest, ms),
                    None => Vec::new(),
                };
                if idle >= state.ping_interval && lines.is_empty() {
                    lines.push(EventLine::Ping);
                }
                lines
            }
            Ok(None) => return,
            Ok(Some(c)) => match c.kind {
                ChangeKind::Resync => vec![EventLine::Resync],
                ChangeKind::Archived => {
                    let revision = c.revision.map(|r| r.get());
                    send(&tx, &EventLine::Archived { revision }).await;
                    return;
                }
                ChangeKind::Changed => match state.store.read_versioned(&op).await {
                    Ok(now) => {
                        let lines = news(&mut told, &now.data);
                        latest = now.data;
                        lines
                    }
                    // Gone from the live ledger: archived (or removed) meanwhile.
                    Err(crate::error::Error::OperationNotFound(_)) => {
                        send(&tx, &EventLine::Archived { revision: None }).await;
                        return;
                    }
                    Err(_) => vec![EventLine::Resync],
                },
            },
        };
        if !lines.is_empty() {
            idle = Duration::ZERO;
        }
        for line in &lines {
            if !send(&tx, line).await {
                return;
            }
        }
    }
}

/// The lines one new version of the operation is worth.
fn news(told: &mut Told, data: &LedgerData) -> Vec<EventLine> {
    let revision = Some(data.seq);
    let mut lines = vec![EventLine::Changed { revision }];
    if data.aborted && !told.aborted {
        lines.push(EventLine::Abort { revision });
    }
    let now_crashed = crashed(data);
    let fresh: Vec<ParticipantId> = now_crashed.difference(&told.crashed).cloned().collect();
    if !fresh.is_empty() {
        lines.push(EventLine::Crash {
            revision,
            participants: fresh,
        });
    }
    told.aborted = data.aborted;
    told.crashed = now_crashed;
    lines
}
