//! The `FileStore`: the behavioural store suite (with default, durable and trail-less
//! settings), and the trail and archive retention on disk.

#[macro_use]
mod store_suite;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use store_suite::{TestLedger, op, sample};
use tom_dist_ledger::ids::OperationId;
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, Store};

fn ledger_with(options: FileStoreOptions) -> TestLedger {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("ledger");
    TestLedger::new(dir, move || {
        Arc::new(FileStore::open(&base, options.clone()).expect("open ledger")) as Arc<dyn Store>
    })
}

async fn file_ledger() -> TestLedger {
    ledger_with(FileStoreOptions::default())
}

async fn durable_file_ledger() -> TestLedger {
    ledger_with(FileStoreOptions {
        durable: true,
        ..FileStoreOptions::default()
    })
}

async fn trailless_file_ledger() -> TestLedger {
    ledger_with(FileStoreOptions {
        trail_keep: 0,
        ..FileStoreOptions::default()
    })
}

mod suite_default {
    store_suite!(super::file_ledger);
}

mod suite_durable {
    store_suite!(super::durable_file_ledger);
}

mod suite_without_trail {
    store_suite!(super::trailless_file_ledger);
}

fn open(dir: &Path, trail_keep: u64, max_backups: usize) -> FileStore {
    let options = FileStoreOptions {
        trail_keep,
        max_backups,
        durable: false,
        ..FileStoreOptions::default()
    };
    FileStore::open(dir, options).expect("open ledger")
}

async fn touch(store: &FileStore, id: &OperationId) -> LedgerData {
    store
        .modify(id, &mut |d| {
            d.aborted = !d.aborted;
            Ok(())
        })
        .await
        .expect("modify")
}

fn trail_names(store: &FileStore, id: &OperationId) -> BTreeSet<String> {
    match fs::read_dir(store.trail_dir(id)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn names(id: &OperationId, seqs: impl IntoIterator<Item = u64>) -> BTreeSet<String> {
    seqs.into_iter()
        .map(|s| format!("{s:08}_{id}.json"))
        .collect()
}

#[tokio::test]
async fn trail_holds_the_file_as_it_was_before_each_modification() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 200, 20);
    let id = op("op_trail");
    store.create(&sample("op_trail")).await.unwrap();
    assert!(
        trail_names(&store, &id).is_empty(),
        "no trail before the first change"
    );
    for seq in 1..=5u64 {
        let before = fs::read(store.operation_path(&id)).unwrap();
        let written = touch(&store, &id).await;
        assert_eq!(written.seq, seq);
        let entry = store.trail_dir(&id).join(format!("{seq:08}_{id}.json"));
        assert_eq!(fs::read(&entry).unwrap(), before, "trail entry {seq}");
        assert_eq!(LedgerData::from_json(&before).unwrap().seq, seq - 1);
    }
}

#[tokio::test]
async fn trail_names_follow_seq_across_writers() {
    let dir = tempfile::tempdir().unwrap();
    let stores = [open(dir.path(), 200, 20), open(dir.path(), 200, 20)];
    let id = op("op_trail_numbers");
    stores[0].create(&sample("op_trail_numbers")).await.unwrap();
    for n in 0..12 {
        touch(&stores[n % 2], &id).await;
    }
    assert_eq!(trail_names(&stores[0], &id), names(&id, 1..=12));
}

#[tokio::test]
async fn trail_is_bounded_and_catches_up_on_missed_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 4, 20);
    let id = op("op_trail_bound");
    store.create(&sample("op_trail_bound")).await.unwrap();
    for _ in 0..10 {
        touch(&store, &id).await;
    }
    assert_eq!(trail_names(&store, &id), names(&id, 7..=10));
    // Entries a writer that died before pruning left behind go at the next round.
    for stale in [2, 5] {
        let entry = store.trail_dir(&id).join(format!("{stale:08}_{id}.json"));
        fs::write(entry, b"{}").unwrap();
    }
    touch(&store, &id).await;
    touch(&store, &id).await;
    assert_eq!(trail_names(&store, &id), names(&id, 9..=12));
}

#[tokio::test]
async fn trail_keep_zero_disables_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 0, 20);
    let id = op("op_no_trail");
    store.create(&sample("op_no_trail")).await.unwrap();
    for _ in 0..5 {
        touch(&store, &id).await;
    }
    assert_eq!(store.read(&id).await.unwrap().seq, 5);
    assert!(!store.trail_dir(&id).exists());
}

#[tokio::test]
async fn archive_takes_the_trail_along() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 200, 20);
    let id = op("op_archived_trail");
    store.create(&sample("op_archived_trail")).await.unwrap();
    touch(&store, &id).await;
    touch(&store, &id).await;
    store.archive(&id).await.unwrap();
    let archive = store.archive_dir(&id);
    assert!(!store.trail_dir(&id).exists());
    let archived: BTreeSet<String> = fs::read_dir(archive.join("trail"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(archived, names(&id, 1..=2));
    for name in ["operation.json", "operation.log", "operation.debug.log"] {
        assert!(archive.join(name).is_file(), "{name}");
    }
}

fn set_mtime(dir: &Path, secs_since_epoch: u64) {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(secs_since_epoch);
    File::open(dir).unwrap().set_modified(when).unwrap();
}

#[tokio::test]
async fn retention_keeps_the_newest_archives_by_archive_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 200, 2);
    // Archived in the opposite of name order, so the test tells time from name.
    let order = ["op_d", "op_c", "op_b", "op_a"];
    for id in order {
        store.create(&sample(id)).await.unwrap();
    }
    for (age, id) in order.iter().enumerate() {
        let id = op(id);
        store.archive(&id).await.unwrap();
        // Give each archive a distinct, older-first time without waiting for the clock.
        set_mtime(&store.archive_dir(&id), 1_000_000_000 + age as u64);
    }
    assert_eq!(
        store.list_archived().await.unwrap(),
        vec![op("op_a"), op("op_b")]
    );
    assert!(!store.archive_dir(&op("op_d")).exists());
    assert!(!store.archive_dir(&op("op_c")).exists());
}

#[tokio::test]
async fn retention_zero_keeps_no_archive() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 200, 0);
    let id = op("op_gone");
    store.create(&sample("op_gone")).await.unwrap();
    store.archive(&id).await.unwrap();
    assert!(store.list_archived().await.unwrap().is_empty());
    assert!(store.list().await.unwrap().is_empty());
}

/// The current revision read from the head of the file follows every write; a file
/// whose head is not the store's own (another tool's key order) gives none (the caller
/// reads it whole).
#[tokio::test]
async fn current_revision_follows_writes_from_the_head_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 200, 20);
    let id = op("op_revision");
    store.create(&sample(id.as_str())).await.unwrap();
    for _ in 0..3 {
        let written = touch(&store, &id).await;
        let now = store.current_revision(&id).await.unwrap();
        assert_eq!(
            now,
            Some(tom_dist_ledger::store::Revision::new(written.seq))
        );
    }
    assert_eq!(
        store.current_revision(&id).await.unwrap(),
        Some(store.read_versioned(&id).await.unwrap().revision)
    );
    // The same operation with `seq` last, as a tool that orders keys otherwise writes it.
    let mut value: serde_json::Value =
        serde_json::from_slice(&fs::read(store.operation_path(&id)).unwrap()).unwrap();
    let map = value.as_object_mut().unwrap();
    map.remove("seq");
    map.insert("seq".into(), serde_json::json!(41));
    fs::write(
        store.operation_path(&id),
        serde_json::to_vec_pretty(&value).unwrap(),
    )
    .unwrap();
    assert_eq!(store.current_revision(&id).await.unwrap(), None);
    assert_eq!(store.read_versioned(&id).await.unwrap().revision.get(), 41);
    let missing = op("op_revision_missing");
    let err = store.current_revision(&missing).await.unwrap_err();
    assert!(
        matches!(err, tom_dist_ledger::Error::OperationNotFound(_)),
        "{err}"
    );
}

/// A change's log lines go to the log in one append, each still one line (line breaks
/// inside a line escaped), and an oversized log is rotated after them.
#[tokio::test]
async fn a_changes_lines_are_appended_together_and_stay_one_line_each() {
    use tom_dist_ledger::store::{LogCursor, LogKind};
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions {
            durable: false,
            log_max_bytes: 64,
            ..FileStoreOptions::default()
        },
    )
    .expect("open ledger");
    let id = op("op_lines");
    store.create(&sample(id.as_str())).await.unwrap();
    let lines = ["one", "two\nhalf\rway", "three"].map(String::from);
    let (_, logged) = store
        .modify_logged(&id, &mut |_| Ok(()), &lines)
        .await
        .unwrap();
    logged.unwrap();
    let (text, _) = store
        .read_log(&id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(text, "one\ntwo\\nhalf\\rway\nthree\n");
    let long = ["x".repeat(80)];
    store
        .modify_logged(&id, &mut |_| Ok(()), &long)
        .await
        .unwrap()
        .1
        .unwrap();
    let log = dir.path().join(format!("{id}.operation.log"));
    let live = fs::read_to_string(&log).unwrap();
    assert!(
        live.contains("LOG_ROTATED"),
        "rotated after the lines: {live}"
    );
    let earlier = fs::read_to_string(format!("{}.1", log.display())).unwrap();
    assert!(earlier.ends_with(&format!("{}\n", long[0])), "{earlier}");
}
