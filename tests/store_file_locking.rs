//! The `FileStore`'s lock file and watcher: lifetimes, waiting writers, nothing left behind.

mod common;
mod store_suite;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use common::{CHILD_ENV, PATIENCE, has_lock_waiter, run_alone_in_child, wait_until};
use store_suite::{op, sample};
use tokio::task::JoinHandle;
use tom_dist_ledger::ids::OperationId;
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, LogKind, Store};
use tom_dist_ledger::{Error, Result};

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, FileStoreOptions::default()).expect("open ledger")
}

fn dir_listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[tokio::test]
async fn lock_file_lives_as_long_as_the_operation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = op("op_lock_life");
    store.create(&sample("op_lock_life")).await.unwrap();
    let lock = store.lock_path(&id);
    let ino = fs::metadata(&lock).unwrap().ino();
    for n in 0..20 {
        store.modify(&id, &mut |_| Ok(())).await.unwrap();
        store
            .append_log(&id, LogKind::Main, &format!("event {n}"))
            .await
            .unwrap();
        assert_eq!(
            fs::metadata(&lock).unwrap().ino(),
            ino,
            "lock file replaced"
        );
    }
    store.archive(&id).await.unwrap();
    assert!(!lock.exists(), "the lock goes with the operation");
}

#[tokio::test]
async fn calls_on_unknown_or_archived_operations_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let archived = op("op_archived");
    store.create(&sample("op_archived")).await.unwrap();
    store.archive(&archived).await.unwrap();
    let before = dir_listing(dir.path());
    for id in [op("op_unknown"), archived.clone()] {
        assert!(matches!(
            store.modify(&id, &mut |_| Ok(())).await,
            Err(Error::OperationNotFound(_))
        ));
        assert!(matches!(
            store.archive(&id).await,
            Err(Error::OperationNotFound(_))
        ));
        assert!(matches!(
            store.read(&id).await,
            Err(Error::OperationNotFound(_))
        ));
        let _ = store.watch(&id).unwrap();
    }
    assert!(matches!(
        store
            .append_log(&op("op_unknown"), LogKind::Debug, "x")
            .await,
        Err(Error::OperationNotFound(_))
    ));
    assert!(matches!(
        store.create(&sample("op_archived")).await,
        Err(Error::OperationExists(_))
    ));
    assert_eq!(dir_listing(dir.path()), before);
    // A late line of an archived operation goes to its archived log, not next to the ledger.
    store
        .append_log(&archived, LogKind::Main, "late")
        .await
        .unwrap();
    assert_eq!(dir_listing(dir.path()), before);
    assert_eq!(
        store
            .read_log(
                &archived,
                LogKind::Main,
                tom_dist_ledger::store::LogCursor::START
            )
            .await
            .unwrap()
            .0,
        "late\n"
    );
}

/// Hold the lock of `id` as another process would, with std's `flock`.
fn hold_lock(path: &Path) -> (File, u64) {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    file.lock().unwrap();
    let ino = file.metadata().unwrap().ino();
    (file, ino)
}

/// A writer that will wait for the lock the test holds; its change sets the description.
fn spawn_writer(store: &Arc<FileStore>, id: &OperationId) -> JoinHandle<Result<LedgerData>> {
    let (store, id) = (store.clone(), id.clone());
    tokio::spawn(async move {
        store
            .modify(&id, &mut |d| {
                d.description = Some(WAITER.into());
                Ok(())
            })
            .await
    })
}

const WAITER: &str = "from the waiting writer";

async fn finish(writer: JoinHandle<Result<LedgerData>>) -> Result<LedgerData> {
    tokio::time::timeout(PATIENCE, writer)
        .await
        .expect("writer finished")
        .expect("writer ran")
}

/// Change the operation file the way the lock holder would: temp file, rename over.
fn write_as_holder(store: &FileStore, id: &OperationId, change: impl FnOnce(&mut LedgerData)) {
    let path = store.operation_path(id);
    let mut data = LedgerData::from_json(&fs::read(&path).unwrap()).unwrap();
    change(&mut data);
    let tmp = path.with_extension("holder");
    fs::write(&tmp, data.to_json()).unwrap();
    fs::rename(&tmp, &path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_waits_for_the_lock_and_keeps_the_holders_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let id = op("op_wait");
    store.create(&sample("op_wait")).await.unwrap();
    let (held, ino) = hold_lock(&store.lock_path(&id));
    let writer = spawn_writer(&store, &id);
    wait_until("the writer to block on the lock", || has_lock_waiter(ino)).await;
    write_as_holder(&store, &id, |d| {
        d.aborted = true;
        d.seq = 7;
    });
    drop(held);

    let written = finish(writer).await.unwrap();
    assert!(written.aborted, "the holder's change survived");
    assert_eq!(written.description.as_deref(), Some(WAITER));
    assert_eq!(written.seq, 8);
    assert_eq!(store.read(&id).await.unwrap(), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_waiting_while_the_operation_is_archived_finds_it_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let id = op("op_archived_meanwhile");
    store
        .create(&sample("op_archived_meanwhile"))
        .await
        .unwrap();
    let (held, ino) = hold_lock(&store.lock_path(&id));
    let writer = spawn_writer(&store, &id);
    wait_until("the writer to block on the lock", || has_lock_waiter(ino)).await;
    // Archive by hand while holding the lock: move the file away, remove the lock file.
    let archive = store.archive_dir(&id);
    fs::create_dir_all(&archive).unwrap();
    fs::rename(store.operation_path(&id), archive.join("operation.json")).unwrap();
    fs::remove_file(store.lock_path(&id)).unwrap();
    drop(held);

    let result = finish(writer).await;
    assert!(
        matches!(result, Err(Error::OperationNotFound(_))),
        "{result:?}"
    );
    assert!(
        !store.lock_path(&id).exists(),
        "no lock file for a gone operation"
    );
    assert!(!store.operation_path(&id).exists());
}

/// The id comes back (its archive was pruned and it was created again) while a writer still
/// waits on the old, removed lock file: the writer must not go on under the orphan lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_waiting_on_a_removed_lock_file_takes_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let id = op("op_reborn");
    store.create(&sample("op_reborn")).await.unwrap();
    let (old, old_ino) = hold_lock(&store.lock_path(&id));
    let writer = spawn_writer(&store, &id);
    wait_until("the writer to block on the lock", || {
        has_lock_waiter(old_ino)
    })
    .await;
    fs::remove_file(store.lock_path(&id)).unwrap();
    let (new, new_ino) = hold_lock(&store.lock_path(&id));
    drop(old);
    wait_until("the writer to move to the new lock file", || {
        has_lock_waiter(new_ino)
    })
    .await;
    write_as_holder(&store, &id, |d| d.aborted = true);
    drop(new);

    let written = finish(writer).await.unwrap();
    assert!(written.aborted, "the holder's change survived");
    assert_eq!(written.description.as_deref(), Some(WAITER));
}

#[tokio::test]
async fn watcher_thread_ends_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    run_alone_in_child("count_watcher_threads", dir.path());
}

fn watcher_threads() -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            fs::read_to_string(comm).is_ok_and(|c| c.trim() == "ledger-watch")
        })
        .count()
}

#[tokio::test]
#[ignore = "run by watcher_thread_ends_with_the_store in a child process"]
async fn count_watcher_threads() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    assert_eq!(watcher_threads(), 0);
    let store = open(dir);
    assert_eq!(watcher_threads(), 0, "no thread before the first watch");
    store.create(&sample("op_watched")).await.unwrap();
    let rx_a = store.watch(&op("op_watched")).unwrap();
    let rx_b = store.watch(&op("op_other")).unwrap();
    assert!(!rx_a.is_ended() && !rx_b.is_ended());
    // A new thread names itself once it runs.
    wait_until("the watcher thread", || watcher_threads() == 1).await;
    let second = open(dir);
    let _rx_c = second.watch(&op("op_watched")).unwrap();
    wait_until("the second watcher thread", || watcher_threads() == 2).await;
    // Dropping wakes and joins the thread (the kernel may list it a moment longer).
    drop(store);
    wait_until("the first watcher thread to end", || watcher_threads() == 1).await;
    drop(second);
    wait_until("the second watcher thread to end", || {
        watcher_threads() == 0
    })
    .await;
    // The streams of the dropped store report their end.
    assert!(rx_a.is_ended() && rx_b.is_ended());
}
