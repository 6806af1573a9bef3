//! `GET /page/api/events`: one stream of JSON lines for the page's list, so a browser
//! needs one connection however many operations there are (browsers allow few per
//! server).
//!
//! It starts with `{"event":"hello"}`, then sends `{"event":"changed","operation":OP}`
//! whenever the store's watch reports a change of a live operation, and when an
//! operation appears in or leaves the live ledger (the list is read again every
//! [`RESCAN`]); `{"event":"ping"}` while idle. The page reads the list anew on `changed`.
//! It ends when the server shuts down or the reader goes away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::ids::OperationId;
use crate::store::ChangeKind;

use super::super::errors::ApiError;
use super::super::state::AppState;

/// How often the live operations are listed again, for operations that appear or go.
const RESCAN: Duration = Duration::from_secs(1);

/// Live operations watched at once per stream; more are still seen by the rescan.
const WATCHED_MAX: usize = 128;

/// Lines queued for a slow reader.
const LINES_QUEUED: usize = 64;

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum FeedLine {
    Hello,
    Changed { operation: String },
    Ping,
}

/// What woke the feed up.
enum Woke {
    Changed(OperationId),
    Rescan,
    Idle,
}

type Lines = mpsc::Sender<Result<Bytes, Infallible>>;

pub async fn stream(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Listing once up front answers a broken store with an error, not an empty stream.
    let first = state.store.list().await?;
    let (tx, rx) = mpsc::channel(LINES_QUEUED);
    tokio::spawn(feed(state, first, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn send(tx: &Lines, line: &FeedLine) -> bool {
    let Ok(mut text) = serde_json::to_vec(line) else {
        return false;
    };
    text.push(b'\n');
    tx.send(Ok(Bytes::from(text))).await.is_ok()
}

/// The store's watches of the live operations, forwarding the id of each change.
struct Watches {
    tasks: JoinSet<()>,
    handles: HashMap<OperationId, AbortHandle>,
    changed: mpsc::Sender<OperationId>,
}

impl Watches {
    /// Watch what is new in `live`, stop watching what left it.
    fn follow(&mut self, state: &AppState, live: &[OperationId]) {
        self.handles.retain(|op, handle| {
            let keep = live.contains(op);
            if !keep {
                handle.abort();
            }
            keep
        });
        for op in live {
            if self.handles.len() >= WATCHED_MAX || self.handles.contains_key(op) {
                continue;
            }
            let Ok(mut changes) = state.store.watch(op) else {
                continue;
            };
            let (tx, op_id) = (self.changed.clone(), op.clone());
            let handle = self.tasks.spawn(async move {
                while let Some(change) = changes.next().await {
                    if tx.send(op_id.clone()).await.is_err() || change.kind == ChangeKind::Archived
                    {
                        return;
                    }
                }
            });
            self.handles.insert(op.clone(), handle);
        }
    }
}

async fn feed(state: AppState, first: Vec<OperationId>, tx: Lines) {
    let mut shutdown = state.shutdown.clone();
    let (changed, mut changes) = mpsc::channel(LINES_QUEUED);
    let mut watches = Watches {
        tasks: JoinSet::new(),
        handles: HashMap::new(),
        changed,
    };
    let mut known = first;
    known.sort();
    watches.follow(&state, &known);
    if !send(&tx, &FeedLine::Hello).await {
        return;
    }
    let mut rescan = tokio::time::interval(RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle = tokio::time::interval(state.ping_interval);
    idle.reset();
    loop {
        let woke = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tx.closed() => return,
            Some(op) = changes.recv() => Woke::Changed(op),
            _ = rescan.tick() => Woke::Rescan,
            _ = idle.tick() => Woke::Idle,
        };
        let line = match woke {
            Woke::Changed(op) => FeedLine::Changed {
                operation: op.to_string(),
            },
            Woke::Idle => FeedLine::Ping,
            Woke::Rescan => {
                let Ok(mut live) = state.store.list().await else {
                    continue;
                };
                live.sort();
                watches.follow(&state, &live);
                // The first operation that appeared or left: the page reads the whole
                // list again anyway.
                let Some(op) = live
                    .iter()
                    .find(|op| known.binary_search(op).is_err())
                    .or_else(|| known.iter().find(|op| live.binary_search(op).is_err()))
                else {
                    continue;
                };
                let line = FeedLine::Changed {
                    operation: op.to_string(),
                };
                known = live;
                line
            }
        };
        if !matches!(line, FeedLine::Ping) {
            idle.reset();
        }
        if !send(&tx, &line).await {
            return;
        }
    }
}
