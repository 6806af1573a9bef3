//! `GET /v1/operations/{op}/events`: an operation's changes pushed as JSON lines, so a
//! remote participant learns of an abort, a crash declaration or the archive at once.
//!
//! The stream starts with `hello`, the operation's revision and the operation at it, then
//! one line per change: `changed` with the revision and the operation as written, plus
//! `abort` when the flag was set and `crash` when frames were newly declared crashed;
//! `archived` ends it; `resync` when changes were lost (the store's watch lost some, or
//! this reader fell behind); `ping` while idle. Given `?staleMs=N`, the stream also
//! carries the participants' heartbeats judged by the server's clock (`beats.rs`):
//! `joined` at a participant's first beat at an epoch, `expired` once its last beat is
//! older than N ms. It ends when the store's watch ends or the server shuts down; a
//! client then reconnects and reads the operation anew.
//!
//! Every stream of an operation forwards the lines of one shared hub (`hub.rs`): the
//! operation is read, each line written and the ages judged once, however many streams
//! watch it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::sync::{broadcast, watch};

use crate::store::remote::wire::EventLine;

use super::errors::ApiError;
use super::hub::{HubLine, line_bytes};
use super::native::operation;
use super::state::AppState;

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
    let subscription = state.hubs.subscribe(&state, &op, stale_ms).await?;
    let reader = Reader {
        preamble: subscription.preamble.into(),
        lines: subscription.lines,
        stale_ms,
        shutdown: state.shutdown.clone(),
        ping_interval: state.ping_interval,
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(
        reader,
        |mut reader| async move {
            reader
                .next()
                .await
                .map(|line| (Ok::<Bytes, Infallible>(line), reader))
        },
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// One stream's end of its operation's hub.
struct Reader {
    preamble: VecDeque<Bytes>,
    lines: broadcast::Receiver<HubLine>,
    stale_ms: Option<u64>,
    shutdown: watch::Receiver<bool>,
    ping_interval: Duration,
    done: bool,
}

impl Reader {
    /// The next line to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.preamble.pop_front() {
            return Some(first);
        }
        if self.done {
            return None;
        }
        loop {
            let received = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => return None,
                received = tokio::time::timeout(self.ping_interval, self.lines.recv()) => received,
            };
            match received {
                Err(_) => return Some(line_bytes(&EventLine::Ping)),
                Ok(Ok(line)) => {
                    // Presence judged with another threshold is not this stream's.
                    if line.stale_ms.is_some() && line.stale_ms != self.stale_ms {
                        continue;
                    }
                    self.done = line.last;
                    return Some(line.text);
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    return Some(line_bytes(&EventLine::Resync));
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    }
}
