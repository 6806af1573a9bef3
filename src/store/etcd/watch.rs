//! Watches of the etcd store: one etcd watch per watched operation and handle, feeding
//! the handle's [`Subscribers`].
//!
//! A watch starts from a revision this handle has already seen, so a write made after
//! [`Store::watch`](crate::store::Store::watch) returned is never missed. Writes between
//! that revision and the watch's creation may have come before the call: they are
//! reported without a revision (a change report only makes the reader read), so a
//! reported revision is never older than the call. When the
//! stream breaks (a member died, the connection dropped) the watch resumes on a live
//! member from the revision after the last event it delivered: nothing is lost and no
//! resync is needed. When that revision was compacted away, etcd cancels the watch: the
//! subscribers get a resync and the watch goes on from the compaction point. Dropping
//! the handle ends every stream it gave out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::known::KnownValues;
use super::record;
use crate::error::Result;
use crate::ids::OperationId;
use crate::revision::Revision;
use crate::store::{ChangeStream, OperationChange, Subscribers};

type Feed = Mutex<Subscribers<OperationId>>;

/// How often an idle watch checks whether anyone still listens.
const IDLE_CHECK: Duration = Duration::from_secs(2);
/// Pause before a broken watch is taken up again.
const RESUME_PAUSE: Duration = Duration::from_millis(100);

/// One operation's watch task, and whether it has stopped taking subscribers (set under
/// the feed's lock, where subscribing checks it, so no subscriber is left to a task
/// that is ending).
struct Task {
    done: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// The watches of one store handle.
pub(super) struct Watches {
    feed: Arc<Feed>,
    known: Arc<KnownValues>,
    tasks: Mutex<HashMap<OperationId, Task>>,
    cluster: Cluster,
    runtime: Handle,
}

impl Watches {
    pub fn new(cluster: Cluster, runtime: Handle, known: Arc<KnownValues>) -> Self {
        Self {
            feed: Arc::default(),
            known,
            tasks: Mutex::default(),
            cluster,
            runtime,
        }
    }

    /// A stream of the changes of `op` (whose live key is `key`), starting after the
    /// revision `seen`.
    pub fn subscribe(&self, op: &OperationId, key: String, seen: i64) -> Result<ChangeStream> {
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        let stream = feed.subscribe(op.clone());
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|_, task| !task.done.load(Ordering::Acquire));
        if !tasks.contains_key(op) {
            let done = Arc::new(AtomicBool::new(false));
            let watch = Watch {
                op: op.clone(),
                key,
                next: seen.saturating_add(1).max(1),
                certain_after: None,
                feed: Arc::downgrade(&self.feed),
                known: Arc::downgrade(&self.known),
                done: done.clone(),
                cluster: self.cluster.clone(),
            };
            let handle = self.runtime.spawn(watch.run());
            tasks.insert(op.clone(), Task { done, handle });
        }
        drop(feed);
        Ok(stream)
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            task.handle.abort();
        }
    }
}

/// One operation's watch.
struct Watch {
    op: OperationId,
    key: String,
    /// The revision to resume from.
    next: i64,
    /// The cluster's revision when the first watch was created: changes up to it may
    /// predate the subscription and carry no revision.
    certain_after: Option<i64>,
    feed: Weak<Feed>,
    /// The handle's last values, kept current by the events (for one-round-trip changes).
    known: Weak<KnownValues>,
    done: Arc<AtomicBool>,
    cluster: Cluster,
}

enum Outcome {
    /// Nobody listens any more, or the handle is gone.
    Done,
    /// The stream broke or was cancelled: take it up again from `next`.
    Resume,
}

impl Watch {
    async fn run(mut self) {
        loop {
            let generation = self.cluster.current_generation();
            match self.follow().await {
                Outcome::Done => return,
                Outcome::Resume => {
                    self.cluster.heal(generation).await;
                    tokio::time::sleep(RESUME_PAUSE).await;
                }
            }
        }
    }

    /// Whether anyone still listens (and to whom to publish). Once nobody does, the
    /// task is marked done under the feed's lock: a later subscriber starts a new one.
    fn listening(&self) -> Option<Arc<Feed>> {
        let Some(feed) = self.feed.upgrade() else {
            self.done.store(true, Ordering::Release);
            return None;
        };
        let watched = {
            let subscribers = feed.lock().unwrap_or_else(|e| e.into_inner());
            let watched = subscribers.count(&self.op) > 0;
            if !watched {
                self.done.store(true, Ordering::Release);
            }
            watched
        };
        watched.then_some(feed)
    }

    fn publish(&self, change: OperationChange) -> bool {
        match self.listening() {
            Some(feed) => {
                feed.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .publish(&self.op, change);
                true
            }
            None => false,
        }
    }

    /// Keep the handle's last value of the operation current (only of an operation it
    /// changes: it knows a value of it already).
    fn take_in(&self, kind: EventType, kv: &etcd_client::KeyValue) {
        let Some(known) = self.known.upgrade() else {
            return;
        };
        match kind {
            EventType::Put => known.offer_raw(&self.op, kv.value(), kv.mod_revision()),
            EventType::Delete => known.forget(&self.op),
        }
    }

    /// The `seq` a put holds: known without parsing when this handle wrote or read that
    /// very value (its own writes, the common case), else read from the value.
    fn seq_of(&self, kv: &etcd_client::KeyValue) -> Option<u64> {
        self.known
            .upgrade()
            .and_then(|known| known.seq_at(&self.op, kv.mod_revision()))
            .or_else(|| record::seq_of(kv.value()))
    }

    async fn follow(&mut self) -> Outcome {
        if self.listening().is_none() {
            return Outcome::Done;
        }
        let mut client = self.cluster.client();
        let options = WatchOptions::new().with_start_revision(self.next);
        let mut stream = match client.watch(self.key.as_bytes(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("etcd watch of `{}` failed to start: {e}", self.op);
                return Outcome::Resume;
            }
        };
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                () = tokio::time::sleep(IDLE_CHECK) => {
                    if self.listening().is_none() {
                        return Outcome::Done;
                    }
                    continue;
                }
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Outcome::Resume,
                Err(e) => {
                    tracing::debug!("etcd watch of `{}` broke: {e}", self.op);
                    return Outcome::Resume;
                }
            };
            if response.canceled() {
                let compacted = response.compact_revision();
                if compacted > 0 {
                    // What happened between `next` and the compaction is gone: read anew.
                    self.next = compacted;
                    if !self.publish(OperationChange::resync()) {
                        return Outcome::Done;
                    }
                }
                return Outcome::Resume;
            }
            if response.created() && self.certain_after.is_none() {
                self.certain_after = Some(response.header().map_or(0, |h| h.revision()));
            }
            let certain_after = self.certain_after.unwrap_or(i64::MAX);
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                self.next = self.next.max(kv.mod_revision().saturating_add(1));
                self.take_in(event.event_type(), kv);
                let change = match event.event_type() {
                    EventType::Put if kv.mod_revision() > certain_after => {
                        OperationChange::changed(self.seq_of(kv).map(Revision::new))
                    }
                    EventType::Put => OperationChange::changed(None),
                    EventType::Delete => OperationChange::archived(None),
                };
                if !self.publish(change) {
                    return Outcome::Done;
                }
            }
        }
    }
}
