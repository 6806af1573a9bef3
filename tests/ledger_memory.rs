//! The ledger behaviour suite on the in-memory store, which implements only
//! compare-and-swap and makes every other swap conflict, so every change of the ledger
//! runs twice: the core needs nothing more, and its changes are pure. Behaviours that
//! need other processes to reach the ledger are listed as ignored, with that reason.

mod common;
mod ledger_suite;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ledger_suite::Backend;
use tom_dist_ledger::Connect;
use tom_dist_ledger::ledger::{OperationCallback, OperationOptions};
use tom_dist_ledger::store::MemoryStore;

struct MemoryBackend {
    store: MemoryStore,
}

impl MemoryBackend {
    fn new() -> Self {
        Self {
            store: MemoryStore::rerunning_changes(),
        }
    }
}

impl Backend for MemoryBackend {
    fn connect(&self, _participant: &str) -> Connect {
        // Each participant holds its own handle, as each process holds its own store.
        Connect::store(Arc::new(self.store.handle()))
    }

    fn shared_location(&self) -> Option<(&'static str, String)> {
        None
    }
}

ledger_suite!(in_process: MemoryBackend::new());

/// A watch whose feed ends (a restarted watcher, a reconnect) is taken up again: an abort
/// set afterwards still reaches another participant at once, not at its next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_is_pushed_after_the_watch_feed_restarts() {
    let backend = MemoryBackend::new();
    ledger_suite::guarded(async {
        let slow = |c: Connect| c.heartbeat_interval(Duration::from_secs(3600));
        let cli = ledger_suite::connect_with(&backend, "cli", slow).await;
        let worker = ledger_suite::connect_with(&backend, "w", slow).await;
        let op = cli.create_operation(OperationOptions::new()).await.unwrap();
        let beats = Arc::new(AtomicUsize::new(0));
        let counted = beats.clone();
        let joined = worker
            .join_operation(
                op.operation_id(),
                OperationOptions::new().callback(OperationCallback::new().on_heartbeat_success(
                    move |_, _| {
                        counted.fetch_add(1, Ordering::Relaxed);
                    },
                )),
            )
            .await
            .unwrap();
        // The worker's first beat (at once) has landed; the next is an hour away.
        ledger_suite::wait_until("the first heartbeat", || {
            let beats = beats.clone();
            async move { beats.load(Ordering::Relaxed) >= 1 }
        })
        .await;
        let id = op.operation_id().clone();
        let watching = backend.store.watch_count(&id);
        assert!(watching >= 2, "both participants watch the operation");
        backend.store.restart_watches();
        // Both take their watch up again.
        ledger_suite::wait_until("both participants to watch again", || {
            let n = backend.store.watch_count(&id);
            async move { n >= watching }
        })
        .await;
        op.set_abort_flag(true).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), joined.aborted())
            .await
            .expect("abort not pushed after the watch feed restarted");
        assert!(joined.is_aborted());
        joined.leave(false).await.unwrap();
        op.complete().await.unwrap();
    })
    .await;
}
