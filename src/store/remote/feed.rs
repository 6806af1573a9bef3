//! The event stream of one watched operation: a task that reads the server's JSON lines
//! (`GET /v1/operations/{op}/events`) and publishes them to the operation's watch
//! streams. A broken connection is a gap: the streams get a resync, and the task
//! reconnects with backoff. Every stream's start (`hello`) is a resync too: changes
//! between the watch and the stream's start, or during a gap, are not known. It ends when nobody watches the operation any more, when the
//! operation is archived or gone (its streams end), or when the store is dropped.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::revision::Revision;

use super::super::{OperationChange, Subscribers};
use super::ages::{ServerAges, ServerExpired};
use super::client::RemoteStore;
use super::http::Http;
use super::known::Known;
use super::wire::EventLine;

/// Longest silence on a stream before it counts as broken (the server pings every 5 s).
const SILENCE: Duration = Duration::from_secs(15);

/// Longest pause between reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Start the operation's event-stream task unless it runs.
pub fn ensure_running(store: &RemoteStore, op: &OperationId) -> Result<()> {
    let mut feeding = store.feeding.lock().unwrap_or_else(|e| e.into_inner());
    if feeding.get(op).is_some_and(|t| !t.is_finished()) {
        return Ok(());
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::invalid(
            format!("watch of operation `{op}`"),
            "needs a tokio runtime (the remote store's event stream runs as a task)",
        )
    })?;
    let task = runtime.spawn(run(
        store.http.clone(),
        Arc::downgrade(&store.feed),
        store.ages.clone(),
        store.known.clone(),
        op.clone(),
    ));
    feeding.insert(op.clone(), task);
    Ok(())
}

type Feed = Weak<Mutex<Subscribers<OperationId>>>;

/// Publish to the operation's streams; false when the store is gone or nobody watches.
fn publish(feed: &Feed, op: &OperationId, change: OperationChange) -> bool {
    let Some(feed) = feed.upgrade() else {
        return false;
    };
    let mut subs = feed.lock().unwrap_or_else(|e| e.into_inner());
    subs.publish(op, change);
    subs.is_watched(op)
}

fn end(feed: &Feed, op: &OperationId) {
    if let Some(feed) = feed.upgrade() {
        feed.lock().unwrap_or_else(|e| e.into_inner()).end(op);
    }
}

fn watched(feed: &Feed, op: &OperationId) -> bool {
    feed.upgrade()
        .is_some_and(|f| f.lock().unwrap_or_else(|e| e.into_inner()).count(op) > 0)
}

/// What a line is, without parsing the operation it may carry. A `hello` or `changed`
/// line with its operation is kept as the newest version seen (the operation as the
/// stream starts is no change: the watchers get a resync for `hello`), so that neither
/// the watchers nor the next change need to read it.
#[derive(serde::Deserialize)]
struct DocumentHead {
    event: String,
    revision: Option<u64>,
    #[serde(default)]
    document: Option<serde::de::IgnoredAny>,
}

/// How one connection ended.
enum Ended {
    /// The operation left the live ledger (archived or removed): the streams end.
    Gone,
    /// The operation was not live when the stream asked for it.
    Missing,
    /// Nobody watches any more, or the store was dropped.
    Unwatched,
    /// The connection broke or never came up: reconnect.
    Broken,
}

async fn run(http: Http, feed: Feed, ages: Arc<ServerAges>, known: Arc<Known>, op: OperationId) {
    let mut pause = http.timing.first_backoff;
    loop {
        if !watched(&feed, &op) {
            return;
        }
        match follow(&http, &feed, &ages, &known, &op).await {
            Ended::Gone => {
                known.forget(&op);
                end(&feed, &op);
                return;
            }
            Ended::Missing => {
                // Archived before the stream came up: report it as the archive it was.
                let archived = format!("/v1/archived/{op}");
                if http
                    .request(Method::GET, &archived)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    publish(&feed, &op, OperationChange::archived(None));
                }
                known.forget(&op);
                end(&feed, &op);
                return;
            }
            Ended::Unwatched => return,
            Ended::Broken => {
                if !publish(&feed, &op, OperationChange::resync()) {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// Read one connection's lines until it ends.
async fn follow(
    http: &Http,
    feed: &Feed,
    ages: &ServerAges,
    known: &Known,
    op: &OperationId,
) -> Ended {
    // With a stale threshold, the server judges heartbeats and pushes who expired.
    let path = match ages.stale_ms() {
        Some(ms) => format!("/v1/operations/{op}/events?staleMs={ms}"),
        None => format!("/v1/operations/{op}/events"),
    };
    let response = match http.request(Method::GET, &path).send().await {
        Ok(r) => r,
        Err(_) => return Ended::Broken,
    };
    match response.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => return Ended::Missing,
        _ => return Ended::Broken,
    }
    let mut response = response;
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            _ => return Ended::Broken,
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end_of_line) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end_of_line).collect();
            // A line with an operation is only scanned here: the operation is parsed
            // when someone asks for it (under a storm of writes, only the last one is).
            if let Ok(head) = serde_json::from_slice::<DocumentHead>(&line)
                && head.document.is_some()
                && let Some(revision) = head.revision
                && matches!(head.event.as_str(), "hello" | "changed")
            {
                known.offer_pushed(op, Revision::new(revision), line);
                let change = if head.event == "hello" {
                    OperationChange::resync()
                } else {
                    OperationChange::changed(Some(Revision::new(revision)))
                };
                if !publish(feed, op, change) {
                    return Ended::Unwatched;
                }
                continue;
            }
            let Ok(event) = serde_json::from_slice::<EventLine>(&line) else {
                // A line this client does not know: read the operation to be sure.
                if !publish(feed, op, OperationChange::resync()) {
                    return Ended::Unwatched;
                }
                continue;
            };
            let rev = |r: Option<u64>| r.map(Revision::new);
            let change = match event {
                // What happened between the watch and the stream's start (or during a
                // gap) is not known to the watchers: they read again.
                EventLine::Hello { .. } | EventLine::Resync => Some(OperationChange::resync()),
                EventLine::Changed { revision, .. } => {
                    Some(OperationChange::changed(rev(revision)))
                }
                // The `changed` line before them already tells the watchers to read.
                EventLine::Abort { .. } | EventLine::Crash { .. } => None,
                EventLine::Archived { revision } => {
                    publish(feed, op, OperationChange::archived(rev(revision)));
                    return Ended::Gone;
                }
                EventLine::Ping | EventLine::Joined { .. } => None,
                EventLine::Expired {
                    participant,
                    epoch,
                    age_ms,
                } => {
                    ages.publish_expired(
                        op,
                        ServerExpired {
                            participant,
                            epoch,
                            age_ms,
                        },
                    );
                    None
                }
            };
            let still_watched = match change {
                Some(change) => publish(feed, op, change),
                None => watched(feed, op),
            };
            if !still_watched {
                return Ended::Unwatched;
            }
        }
    }
}
