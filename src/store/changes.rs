//! Watches: async streams of an operation's changes, shared by every backend.
//!
//! A backend keeps a [`Subscribers`] table and publishes into it; each
//! [`Store::watch`](super::Store::watch) hands out a [`ChangeStream`]. A stream never lies
//! by omission:
//! - a subscriber that falls behind by more than [`QUEUE_BOUND`] changes, or a backend
//!   that lost events (inotify overflow, a reconnect, a compaction), gets one
//!   [`ChangeKind::Resync`] instead of the changes it missed: read the operation again;
//! - when the feed behind a stream ends (the store was dropped, its watcher failed),
//!   [`ChangeStream::next`] returns `None` after the queued changes: the end is reported,
//!   never a silent stop. Subscribe again to go on (a new subscription restarts a failed
//!   watcher) and treat it as a resync.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::revision::Revision;

/// Changes a subscriber may fall behind by before they are folded into one resync.
pub const QUEUE_BOUND: usize = 64;

/// What happened to the watched operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// It was written.
    Changed,
    /// It left the live ledger for the archive.
    Archived,
    /// Changes may have been missed: read it again.
    Resync,
}

/// One change of a watched operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperationChange {
    /// The revision the change produced, where the backend knows it without reading the
    /// operation (the memory store always; the file store's directory events carry none,
    /// and reading on every event would cost every write a read per watching process).
    pub revision: Option<Revision>,
    pub kind: ChangeKind,
}

impl OperationChange {
    pub fn changed(revision: Option<Revision>) -> Self {
        Self {
            revision,
            kind: ChangeKind::Changed,
        }
    }

    pub fn archived(revision: Option<Revision>) -> Self {
        Self {
            revision,
            kind: ChangeKind::Archived,
        }
    }

    pub fn resync() -> Self {
        Self {
            revision: None,
            kind: ChangeKind::Resync,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<OperationChange>,
    ended: bool,
}

#[derive(Debug, Default)]
struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The changes of one watched operation, in order; see the module notes.
#[derive(Debug)]
pub struct ChangeStream {
    queue: Arc<Queue>,
}

impl ChangeStream {
    /// The next change, waiting for it; `None` once the feed has ended and every queued
    /// change was taken.
    pub async fn next(&mut self) -> Option<OperationChange> {
        loop {
            {
                let mut state = self.queue.state();
                if let Some(change) = state.items.pop_front() {
                    return Some(change);
                }
                if state.ended {
                    return None;
                }
            }
            self.queue.notify.notified().await;
        }
    }

    /// The next change if one comes within `bound`. Once the feed has ended this waits
    /// the whole bound, so a caller that re-reads after each call polls at that pace
    /// instead of spinning.
    pub async fn next_within(&mut self, bound: std::time::Duration) -> Option<OperationChange> {
        match tokio::time::timeout(bound, self.next()).await {
            Ok(Some(change)) => Some(change),
            Ok(None) => {
                tokio::time::sleep(bound).await;
                None
            }
            Err(_) => None,
        }
    }

    /// A change already queued, without waiting (to fold a burst into one read).
    pub fn try_next(&mut self) -> Option<OperationChange> {
        self.queue.state().items.pop_front()
    }

    /// Whether the feed has ended (queued changes may still be there to take).
    pub fn is_ended(&self) -> bool {
        self.queue.state().ended
    }
}

/// The publishing end of one stream, held by a backend.
#[derive(Debug)]
struct Sender {
    queue: Weak<Queue>,
}

impl Sender {
    /// Queue `change`; false when the stream is gone.
    fn send(&self, change: OperationChange) -> bool {
        let Some(queue) = self.queue.upgrade() else {
            return false;
        };
        {
            let mut state = queue.state();
            if state.items.len() >= QUEUE_BOUND {
                state.items.clear();
                state.items.push_back(OperationChange::resync());
            } else {
                state.items.push_back(change);
            }
        }
        queue.notify.notify_one();
        true
    }

    fn is_closed(&self) -> bool {
        self.queue.strong_count() == 0
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.upgrade() {
            queue.state().ended = true;
            queue.notify.notify_one();
        }
    }
}

/// A backend's table of streams, by what they watch (an operation id, a file name).
/// Dropping it ends every stream.
#[derive(Debug)]
pub struct Subscribers<K> {
    by_key: HashMap<K, Vec<Sender>>,
}

impl<K: Eq + Hash> Default for Subscribers<K> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Subscribers<K> {
    /// A new stream of the changes published under `key` from now on.
    pub fn subscribe(&mut self, key: K) -> ChangeStream {
        self.by_key.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        let queue = Arc::new(Queue::default());
        self.by_key.entry(key).or_default().push(Sender {
            queue: Arc::downgrade(&queue),
        });
        ChangeStream { queue }
    }

    /// Queue `change` on every stream of `key`.
    pub fn publish<Q>(&mut self, key: &Q, change: OperationChange)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Some(senders) = self.by_key.get_mut(key) {
            senders.retain(|s| s.send(change));
        }
    }

    /// Whether any stream watches `key`.
    pub fn is_watched<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.by_key.contains_key(key)
    }

    /// How many streams of `key` are open.
    pub fn count<Q>(&self, key: &Q) -> usize
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.by_key.get(key).map_or(0, |senders| {
            senders.iter().filter(|s| !s.is_closed()).count()
        })
    }

    /// Tell every stream to read again (events were lost).
    pub fn resync_all(&mut self) {
        for senders in self.by_key.values_mut() {
            senders.retain(|s| s.send(OperationChange::resync()));
        }
    }

    /// End the streams of `key` (the feed of that key stopped).
    pub fn end<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.by_key.remove(key);
    }

    /// End every stream (the feed behind them stopped).
    pub fn end_all(&mut self) {
        self.by_key.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: u64) -> Option<Revision> {
        Some(Revision::new(n))
    }

    #[tokio::test]
    async fn changes_arrive_in_order_with_their_revisions() {
        let mut subs = Subscribers::default();
        let mut stream = subs.subscribe("op");
        subs.publish("op", OperationChange::changed(rev(1)));
        subs.publish("other", OperationChange::changed(rev(9)));
        subs.publish("op", OperationChange::archived(rev(2)));
        assert_eq!(stream.next().await, Some(OperationChange::changed(rev(1))));
        assert_eq!(stream.next().await, Some(OperationChange::archived(rev(2))));
        assert_eq!(stream.try_next(), None);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_one_resync() {
        let mut subs = Subscribers::default();
        let mut stream = subs.subscribe("op");
        for n in 0..=QUEUE_BOUND as u64 {
            subs.publish("op", OperationChange::changed(rev(n)));
        }
        assert_eq!(stream.next().await, Some(OperationChange::resync()));
        assert_eq!(stream.try_next(), None);
    }

    #[tokio::test]
    async fn a_dropped_feed_ends_the_stream_after_what_was_queued() {
        let mut subs = Subscribers::default();
        let mut stream = subs.subscribe("op");
        subs.publish("op", OperationChange::changed(rev(3)));
        drop(subs);
        assert!(stream.is_ended());
        assert_eq!(stream.next().await, Some(OperationChange::changed(rev(3))));
        assert_eq!(stream.next().await, None);
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_wakes_on_the_end() {
        let mut subs = Subscribers::<&str>::default();
        let mut stream = subs.subscribe("op");
        let waiter = tokio::spawn(async move { stream.next().await });
        tokio::task::yield_now().await;
        subs.end_all();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .expect("the end reaches a waiting subscriber");
        assert_eq!(ended.unwrap(), None);
    }

    #[tokio::test]
    async fn resync_all_reaches_every_stream() {
        let mut subs = Subscribers::default();
        let mut a = subs.subscribe("a");
        let mut b = subs.subscribe("b");
        subs.resync_all();
        assert_eq!(a.next().await, Some(OperationChange::resync()));
        assert_eq!(b.next().await, Some(OperationChange::resync()));
    }

    #[test]
    fn dropped_streams_are_forgotten() {
        let mut subs = Subscribers::default();
        drop(subs.subscribe("a"));
        let _kept = subs.subscribe("b");
        assert_eq!(subs.by_key.len(), 1);
    }
}
