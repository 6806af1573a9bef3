//! One shared feed per watched operation: however many event streams watch an
//! operation, the server watches its store once, reads each change once, writes each
//! line once and judges heartbeat ages once per tick, and every stream forwards the same
//! bytes. A stream's own work is forwarding and its idle pings, so the server's idle work
//! grows with operations and participants, not with streams × participants.
//!
//! The hub's lines go out on a broadcast channel: a stream that falls behind by more
//! than [`LINES_QUEUED`] lines gets a `resync` instead of them. `changed` lines carry
//! the operation as written, so no stream's reader has to read it again. A write through
//! the native API is offered to the hub as soon as it is written (the store's watch
//! event that follows finds the hub current and costs one revision check, no read).
//! The hub ends when its last stream is gone, when the operation is archived or gone,
//! or when the store's watch ends (its streams end and their clients reconnect).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{FrameState, LedgerData};
use crate::store::remote::wire::EventLine;
use crate::store::{ChangeKind, ChangeStream, Versioned};

use super::state::AppState;

/// Lines a stream may fall behind by before it gets a `resync` instead.
pub const LINES_QUEUED: usize = 64;

/// How often an operation watched with a stale threshold has its heartbeat ages judged.
const JUDGE_EVERY: Duration = Duration::from_millis(200);

/// One line for an operation's streams: for all of them, or only for those judging with
/// one stale threshold (`joined` / `expired`).
#[derive(Clone, Debug)]
pub struct HubLine {
    pub text: Bytes,
    pub stale_ms: Option<u64>,
    /// The last line (`archived`): the stream ends after it.
    pub last: bool,
}

/// What a new stream gets: its first lines and the operation's lines from then on.
pub struct Subscription {
    pub preamble: Vec<Bytes>,
    pub lines: broadcast::Receiver<HubLine>,
}

/// The hubs of the watched operations.
#[derive(Debug, Default)]
pub struct Hubs {
    map: Mutex<HashMap<OperationId, Arc<Hub>>>,
}

#[derive(Debug)]
struct Hub {
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    latest: Versioned,
    tx: broadcast::Sender<HubLine>,
    aborted: bool,
    crashed: BTreeSet<ParticipantId>,
    /// Presence told so far, by stale threshold.
    groups: BTreeMap<u64, Group>,
    ended: bool,
}

/// Who was announced joined / expired (at their epoch) to the streams of one threshold.
#[derive(Debug, Default)]
struct Group {
    joined: BTreeSet<(ParticipantId, u64)>,
    expired: BTreeMap<(ParticipantId, u64), u64>,
}

impl Hub {
    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `changed` or `hello` line with the document, written from a borrowed document (the
/// same JSON as [`EventLine`], without copying the operation).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DocumentLine<'a> {
    event: &'static str,
    revision: Option<u64>,
    document: &'a LedgerData,
}

/// A line as the bytes sent (JSON and a newline).
pub fn line_bytes<T: Serialize>(line: &T) -> Bytes {
    let mut text = serde_json::to_vec(line).unwrap_or_else(|_| b"{\"event\":\"resync\"}".to_vec());
    text.push(b'\n');
    Bytes::from(text)
}

fn crashed(data: &LedgerData) -> BTreeSet<ParticipantId> {
    data.call_frames
        .iter()
        .filter(|f| f.state == FrameState::Crashed)
        .map(|f| f.participant_id.clone())
        .collect()
}

impl HubState {
    fn new(first: Versioned, tx: broadcast::Sender<HubLine>) -> Self {
        Self {
            aborted: first.data.aborted,
            crashed: crashed(&first.data),
            latest: first,
            tx,
            groups: BTreeMap::new(),
            ended: false,
        }
    }

    fn subscribe(&mut self, stale_ms: Option<u64>) -> Subscription {
        let lines = self.tx.subscribe();
        let mut preamble = vec![line_bytes(&DocumentLine {
            event: "hello",
            revision: Some(self.latest.revision.get()),
            document: &self.latest.data,
        })];
        if let Some(ms) = stale_ms {
            let group = self.groups.entry(ms).or_default();
            for (participant, epoch) in &group.joined {
                preamble.push(line_bytes(&EventLine::Joined {
                    participant: participant.clone(),
                    epoch: *epoch,
                }));
            }
            for ((participant, epoch), age_ms) in &group.expired {
                preamble.push(line_bytes(&EventLine::Expired {
                    participant: participant.clone(),
                    epoch: *epoch,
                    age_ms: *age_ms,
                }));
            }
        }
        Subscription { preamble, lines }
    }

    fn send(&self, text: Bytes, stale_ms: Option<u64>, last: bool) {
        // No receiver is no error: the hub ends at its next check.
        let _ = self.tx.send(HubLine {
            text,
            stale_ms,
            last,
        });
    }

    /// Take in a newer version: `changed` with the document, `abort` when the flag was
    /// set, `crash` for newly crashed frames. An older or equal version is no news.
    fn offer(&mut self, new: &Versioned) {
        if self.ended || new.revision <= self.latest.revision {
            return;
        }
        let revision = Some(new.revision.get());
        self.send(
            line_bytes(&DocumentLine {
                event: "changed",
                revision,
                document: &new.data,
            }),
            None,
            false,
        );
        if new.data.aborted && !self.aborted {
            self.send(line_bytes(&EventLine::Abort { revision }), None, false);
        }
        let now_crashed = crashed(&new.data);
        let fresh: Vec<ParticipantId> = now_crashed.difference(&self.crashed).cloned().collect();
        if !fresh.is_empty() {
            self.send(
                line_bytes(&EventLine::Crash {
                    revision,
                    participants: fresh,
                }),
                None,
                false,
            );
        }
        self.aborted = new.data.aborted;
        self.crashed = now_crashed;
        self.latest = new.clone();
    }

    /// Judge the heartbeat ages once for every threshold streams asked for.
    fn judge(&mut self, state: &AppState) {
        if self.groups.is_empty() {
            return;
        }
        let ages = state.beats.ages(&self.latest.data, state.clock.now());
        let mut lines = Vec::new();
        for (ms, group) in &mut self.groups {
            for age in &ages {
                let key = (age.participant.clone(), age.epoch);
                if age.age_ms > *ms {
                    if !group.expired.contains_key(&key) {
                        group.expired.insert(key, age.age_ms);
                        lines.push((
                            *ms,
                            EventLine::Expired {
                                participant: age.participant.clone(),
                                epoch: age.epoch,
                                age_ms: age.age_ms,
                            },
                        ));
                    }
                } else if age.beaten && group.joined.insert(key) {
                    lines.push((
                        *ms,
                        EventLine::Joined {
                            participant: age.participant.clone(),
                            epoch: age.epoch,
                        },
                    ));
                }
            }
        }
        for (ms, line) in lines {
            self.send(line_bytes(&line), Some(ms), false);
        }
    }
}

impl Hubs {
    fn map(&self) -> MutexGuard<'_, HashMap<OperationId, Arc<Hub>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream of `op`'s lines (`stale_ms`: also the presence lines judged with that
    /// threshold); starts the operation's hub unless it runs.
    pub async fn subscribe(
        &self,
        state: &AppState,
        op: &OperationId,
        stale_ms: Option<u64>,
    ) -> Result<Subscription> {
        if let Some(sub) = self.join_running(op, stale_ms) {
            return Ok(sub);
        }
        // Watch first, then read: nothing written in between is missed.
        let changes = state.store.watch(op)?;
        let first = state.store.read_versioned(op).await?;
        let mut map = self.map();
        if let Some(hub) = map.get(op) {
            let mut hub_state = hub.state();
            if !hub_state.ended {
                return Ok(hub_state.subscribe(stale_ms));
            }
        }
        let (tx, _) = broadcast::channel(LINES_QUEUED);
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState::new(first, tx)),
        });
        let sub = hub.state().subscribe(stale_ms);
        map.insert(op.clone(), hub.clone());
        tokio::spawn(run(state.clone(), op.clone(), hub, changes));
        Ok(sub)
    }

    fn join_running(&self, op: &OperationId, stale_ms: Option<u64>) -> Option<Subscription> {
        let map = self.map();
        let hub = map.get(op)?;
        let mut hub_state = hub.state();
        (!hub_state.ended).then(|| hub_state.subscribe(stale_ms))
    }

    /// A version just written through the server: its streams hear of it at once.
    pub fn offer(&self, op: &OperationId, written: &Versioned) {
        let hub = self.map().get(op).cloned();
        if let Some(hub) = hub {
            hub.state().offer(written);
        }
    }

    /// The operation as it is now: the hub's version when the store confirms it is still
    /// the current revision (no read, no parse), else read from the store.
    pub async fn current(&self, state: &AppState, op: &OperationId) -> Result<Versioned> {
        let hub = self.map().get(op).cloned();
        if let Some(hub) = hub {
            let known = hub.state().latest.revision;
            if state.store.current_revision(op).await? == Some(known) {
                let hub_state = hub.state();
                if hub_state.latest.revision == known {
                    return Ok(hub_state.latest.clone());
                }
            }
        }
        let current = state.store.read_versioned(op).await?;
        self.offer(op, &current);
        Ok(current)
    }

    /// Remove `op`'s hub if it is `hub` and, unless `force`, nobody listens any more;
    /// true when it was removed.
    fn retire(&self, op: &OperationId, hub: &Arc<Hub>, force: bool) -> bool {
        let mut map = self.map();
        let mut hub_state = hub.state();
        if !force && hub_state.tx.receiver_count() > 0 {
            return false;
        }
        hub_state.ended = true;
        if map.get(op).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            map.remove(op);
        }
        true
    }

    /// How many operations have a hub (for tests and measurements).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The hub's task: follow the store's watch, judge ages while any stream asks for it,
/// end when nobody listens.
async fn run(state: AppState, op: OperationId, hub: Arc<Hub>, mut changes: ChangeStream) {
    let hubs = state.hubs.clone();
    let mut shutdown = state.shutdown.clone();
    loop {
        let judging = !hub.state().groups.is_empty();
        let wait = if judging {
            JUDGE_EVERY
        } else {
            state.ping_interval
        };
        let change = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {
                hubs.retire(&op, &hub, true);
                return;
            }
            change = tokio::time::timeout(wait, changes.next()) => change,
        };
        match change {
            Err(_) => hub.state().judge(&state),
            Ok(None) => {
                hubs.retire(&op, &hub, true);
                return;
            }
            Ok(Some(c)) => match c.kind {
                ChangeKind::Archived => {
                    let revision = c.revision.map(|r| r.get());
                    hub.state()
                        .send(line_bytes(&EventLine::Archived { revision }), None, true);
                    hubs.retire(&op, &hub, true);
                    return;
                }
                ChangeKind::Changed | ChangeKind::Resync => {
                    if !catch_up(&state, &op, &hub, c.kind, c.revision).await {
                        hubs.retire(&op, &hub, true);
                        return;
                    }
                }
            },
        }
        if hubs.retire(&op, &hub, false) {
            return;
        }
    }
}

/// Bring the hub to the operation's current version after a change; false once the
/// operation is gone from the live ledger (`archived` was sent).
async fn catch_up(
    state: &AppState,
    op: &OperationId,
    hub: &Arc<Hub>,
    kind: ChangeKind,
    revision: Option<crate::revision::Revision>,
) -> bool {
    let known = hub.state().latest.revision;
    if kind == ChangeKind::Changed {
        // Already offered by the write that made it, or an older change.
        if revision.is_some_and(|r| r <= known) {
            return true;
        }
        if revision.is_none()
            && let Ok(Some(now)) = state.store.current_revision(op).await
            && now <= known
        {
            return true;
        }
    }
    match state.store.read_versioned(op).await {
        Ok(now) => {
            hub.state().offer(&now);
            true
        }
        Err(Error::OperationNotFound(_)) => {
            hub.state().send(
                line_bytes(&EventLine::Archived { revision: None }),
                None,
                true,
            );
            false
        }
        Err(_) => {
            hub.state()
                .send(line_bytes(&EventLine::Resync), None, false);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_line_reads_as_the_event_it_names() {
        let data = LedgerData::new(
            OperationId::parse("op-1").unwrap(),
            ParticipantId::parse("cli").unwrap(),
            chrono::Utc::now(),
        );
        // As the wire keeps it (times in milliseconds).
        let data: LedgerData = serde_json::from_slice(&serde_json::to_vec(&data).unwrap()).unwrap();
        let text = line_bytes(&DocumentLine {
            event: "changed",
            revision: Some(7),
            document: &data,
        });
        match serde_json::from_slice::<EventLine>(&text).unwrap() {
            EventLine::Changed { revision, document } => {
                assert_eq!(revision, Some(7));
                assert_eq!(document.as_deref(), Some(&data));
            }
            other => panic!("{other:?}"),
        }
    }
}
