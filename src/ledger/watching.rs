//! Following the changes the store pushes for an operation: a change this participant
//! has seen already (its own write) costs nothing, the others are folded into at most
//! one read per interval.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::revision::Revision;

use super::shared::{OpShared, spawn};

/// Least time between two reads caused by change notifications (abort and failure reach
/// this participant at most this much later than the write).
const WATCH_COALESCE: Duration = Duration::from_millis(5);

impl OpShared {
    /// Whether this participant's view is at least as new as `revision`.
    fn view_covers(&self, revision: Revision) -> bool {
        self.local()
            .cached
            .as_ref()
            .is_some_and(|d| Revision::new(d.seq) >= revision)
    }

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
                // This participant's own writes are notified too: nothing to read when its
                // view is as new as every change named.
                if newest.is_some_and(|n| shared.view_covers(n)) {
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
