//! Following the changes of an operation that the store pushes: each one this
//! participant has not seen yet (another's write) is read and taken in (`observe`);
//! its own writes cost nothing.
//!
//! A store notifies a write as soon as it is in the store, and the writer takes it into
//! its view a little later (after its log lines). So a change named while a write of
//! this participant is in flight is first given the time to land in the view
//! ([`OwnWrites::settle`]): in a run where the writer is always busy, the watcher would
//! otherwise read the operation back after nearly every write of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::revision::Revision;

use super::shared::{OpShared, spawn};

/// Least time between two reads caused by change notifications (abort and failure reach
/// this participant at most this much later than the write).
const WATCH_COALESCE: Duration = Duration::from_millis(5);
/// Longest a named change waits for this participant's writes in flight before it is
/// read anyway.
const SETTLE_AT_MOST: Duration = Duration::from_millis(100);

/// This participant's writes of one operation that are in the store but maybe not yet
/// in its view.
#[derive(Default)]
pub(crate) struct OwnWrites {
    in_flight: AtomicUsize,
    landed: Notify,
}

/// One write in flight; it has landed (or failed) when dropped.
pub(crate) struct InFlight<'a>(&'a OwnWrites);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.landed.notify_waiters();
    }
}

impl OwnWrites {
    /// A write begins; hold the guard until its result is in the view.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    /// Whether `covered` holds, waiting while it does not and writes are in flight (at
    /// most [`SETTLE_AT_MOST`]).
    pub async fn settle(&self, covered: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + SETTLE_AT_MOST;
        loop {
            let landed = self.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if covered() {
                return true;
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, landed).await.is_err() {
                return covered();
            }
        }
    }
}

impl OpShared {
    /// Start following changes of the operation pushed by the store. A stream that ends
    /// (its feed stopped) is replaced by a new subscription and the operation read again;
    /// if the store can watch no more, the heartbeat is left as the only way news come.
    pub fn start_watching(self: &Arc<Self>) -> Result<()> {
        let mut changes = self.ledger.store.watch(&self.id)?;
        let weak: Weak<OpShared> = Arc::downgrade(self);
        let task = spawn(async move {
            loop {
                let first = match changes.next().await {
                    Some(change) => change,
                    None => {
                        let Some(shared) = weak.upgrade() else { break };
                        match shared.ledger.store.watch(&shared.id) {
                            Ok(again) => changes = again,
                            Err(e) => {
                                tracing::warn!(operation = %shared.id, error = %e, "changes are no longer pushed; heartbeats carry them");
                                break;
                            }
                        }
                        crate::store::OperationChange::resync()
                    }
                };
                // The newest revision the changes name; `None` once one names none (a
                // resync, an archive, a change without revision).
                let mut newest = named_revision(&first);
                // This participant's own write, already in its view: no wait, no read.
                if let Some(n) = newest
                    && weak.upgrade().is_some_and(|s| s.view_covers(n))
                {
                    continue;
                }
                // Under a storm of writes (many busy participants), read at most once per
                // interval: changes in between are folded into the next read, and every
                // participant does not parse every write of every other.
                tokio::time::sleep(WATCH_COALESCE).await;
                while let Some(change) = changes.try_next() {
                    newest = newest.zip(named_revision(&change)).map(|(a, b)| a.max(b));
                }
                let Some(shared) = weak.upgrade() else { break };
                // This participant's own writes are notified too, as soon as they are in
                // the store and before they are in its view: nothing to read when its
                // view, once the writes in flight are in it, is as new as every change
                // named.
                if let Some(n) = newest
                    && shared.own_writes.settle(|| shared.view_covers(n)).await
                {
                    continue;
                }
                // A store that was handed the operation with its changes (a server's
                // pushed documents) has what a read would give.
                if let Some(seen) = newest.and_then(|r| {
                    shared
                        .ledger
                        .store
                        .latest_seen(&shared.id)
                        .filter(|seen| seen.revision >= r)
                }) {
                    shared.observe(&seen.data);
                    continue;
                }
                // Otherwise nothing to read when the operation is still at the revision of
                // this participant's view (asked of the store).
                if shared.view_is_current().await == Some(true) {
                    continue;
                }
                match shared.ledger.store.read(&shared.id).await {
                    Ok(data) => shared.observe(&data),
                    Err(Error::OperationNotFound(_)) => {
                        super::failure::on_disappeared(&shared).await;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(operation = %shared.id, error = %e, "watch read failed")
                    }
                }
            }
        });
        self.local().watcher = Some(task);
        Ok(())
    }
}

/// The revision a pushed change names, if it is a write that names one.
fn named_revision(change: &crate::store::OperationChange) -> Option<Revision> {
    match change.kind {
        crate::store::ChangeKind::Changed => change.revision,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn settling_waits_for_a_write_in_flight_and_not_without_one() {
        let writes = Arc::new(OwnWrites::default());
        assert!(!writes.settle(|| false).await, "nothing in flight: no wait");
        let seen = Arc::new(AtomicBool::new(false));
        let guard_writes = writes.clone();
        let seen_by_writer = seen.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn(async move {
            let guard = guard_writes.begin();
            let _ = started_tx.send(());
            tokio::task::yield_now().await;
            seen_by_writer.store(true, Ordering::SeqCst);
            drop(guard);
        });
        started_rx.await.unwrap();
        assert!(writes.settle(|| seen.load(Ordering::SeqCst)).await);
        writer.await.unwrap();
    }
}
