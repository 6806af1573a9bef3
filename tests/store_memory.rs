//! The `MemoryStore`: the behavioural store suite on a store that implements only
//! compare-and-swap, and what it does to make impure changes show.

#[macro_use]
mod store_suite;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use store_suite::{TestLedger, sample};
use tom_dist_ledger::Error;
use tom_dist_ledger::store::{MemoryStore, Revision, Store, WriteKind};

async fn memory_ledger() -> TestLedger {
    let first = MemoryStore::new();
    let keep = first.handle();
    TestLedger::new(keep, move || Arc::new(first.handle()) as Arc<dyn Store>)
}

mod suite {
    store_suite!(super::memory_ledger);
}

/// On a store that refuses every other swap, read-change-write re-runs the change on a
/// fresh read, and the data is written once.
#[tokio::test]
async fn a_conflict_reruns_the_change_on_a_fresh_read() {
    let store = MemoryStore::rerunning_changes();
    let data = sample("op_rerun");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let runs = AtomicUsize::new(0);
    let written = store
        .modify(id, &mut |d| {
            runs.fetch_add(1, Ordering::Relaxed);
            d.description = Some(format!("{} and more", d.description.as_deref().unwrap()));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::Relaxed), 2, "the change ran again");
    assert_eq!(written.seq, data.seq + 1);
    assert_eq!(
        written.description.as_deref(),
        Some("build the docs and more")
    );
    assert_eq!(store.read(id).await.unwrap(), written);
}

/// A direct swap on the rerunning store is refused with a conflict that names both
/// revisions, and writes nothing.
#[tokio::test]
async fn the_rerunning_store_refuses_a_swap_as_a_conflict() {
    let store = MemoryStore::rerunning_changes();
    let data = sample("op_refused_swap");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let read = store.read_versioned(id).await.unwrap();
    let mut changed = read.data.clone();
    changed.aborted = true;
    let err = store
        .compare_and_swap(id, read.revision, changed.clone(), WriteKind::Change)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { expected, found, .. } if expected == read.revision && found == read.revision),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "operation `{id}` changed meanwhile: expected revision {0}, found {0}",
            read.revision
        )
    );
    assert_eq!(store.read_versioned(id).await.unwrap(), read);
    let swapped = store
        .compare_and_swap(id, read.revision, changed, WriteKind::Change)
        .await
        .unwrap();
    assert_eq!(swapped.revision, Revision::new(data.seq + 1));
}

/// A change that keeps losing gives up after the bound with the last conflict.
#[tokio::test]
async fn read_change_write_gives_up_after_its_bound() {
    let store = MemoryStore::new();
    let other = store.handle();
    let data = sample("op_always_late");
    let id = data.operation_id.clone();
    store.create(&data).await.unwrap();
    let runs = AtomicUsize::new(0);
    let err = store
        .modify(&id, &mut |d| {
            runs.fetch_add(1, Ordering::Relaxed);
            // Another writer gets in between every read and swap of this one. (A change
            // must not do this: it is how a test makes the conflict certain.)
            let other = other.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(other.modify(&id, &mut |_| Ok(()))).unwrap();
            })
            .join()
            .unwrap();
            d.aborted = true;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        runs.load(Ordering::Relaxed),
        tom_dist_ledger::store::MAX_ATTEMPTS as usize
    );
    assert!(!store.read(&id).await.unwrap().aborted);
}

/// Every change reported by the memory store carries the revision it produced.
#[tokio::test]
async fn memory_watch_carries_every_revision() {
    let store = MemoryStore::new();
    let data = sample("op_revisions");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let watcher = store.handle();
    let mut changes = watcher.watch(id).unwrap();
    let mut written = Vec::new();
    for _ in 0..3 {
        written.push(Revision::new(
            store.modify(id, &mut |_| Ok(())).await.unwrap().seq,
        ));
    }
    for revision in written {
        let change = changes.try_next().expect("a change per write");
        assert_eq!(change.revision, Some(revision));
    }
}
