//! The file store's bounds: trail entries and bytes, heartbeat-only writes without trail
//! entries, log rotation (read back as one log), all on real files in a temp directory.

#[allow(unused_macros)]
#[macro_use]
mod store_suite;

use std::fs;
use std::path::Path;

use store_suite::{op, sample};
use tom_dist_ledger::ids::OperationId;
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, LogKind, Store};

fn open(dir: &Path, options: FileStoreOptions) -> FileStore {
    FileStore::open(dir, options).expect("open ledger")
}

/// Entries of the trail: (seq, bytes), oldest first.
fn trail(store: &FileStore, id: &OperationId) -> Vec<(u64, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(store.trail_dir(id)) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, Vec<u8>)> = entries
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            let seq = name.split('_').next().unwrap().parse().unwrap();
            (seq, fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn trail_bytes(store: &FileStore, id: &OperationId) -> u64 {
    trail(store, id).iter().map(|(_, b)| b.len() as u64).sum()
}

async fn describe(store: &FileStore, id: &OperationId, len: usize) -> LedgerData {
    store
        .modify(id, &mut |d| {
            d.description = Some("x".repeat(len));
            Ok(())
        })
        .await
        .expect("modify")
}

async fn beat(store: &FileStore, id: &OperationId) -> LedgerData {
    store
        .refresh(id, &mut |d| {
            d.last_heartbeat = tom_dist_ledger::model::time::now();
            Ok(())
        })
        .await
        .expect("refresh")
}

#[tokio::test]
async fn the_trail_stays_under_its_byte_bound_while_the_file_grows_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let max_bytes = 40_000;
    let options = FileStoreOptions {
        trail_keep: 50,
        trail_max_bytes: max_bytes,
        ..FileStoreOptions::default()
    };
    // Two writers taking turns, as processes of one operation do.
    let stores = [open(dir.path(), options.clone()), open(dir.path(), options)];
    let id = op("op_trail_bytes");
    stores[0].create(&sample("op_trail_bytes")).await.unwrap();
    let sizes: Vec<usize> = (0..60)
        .map(|n| n * 150)
        .chain((0..60).rev().map(|n| n * 150))
        .collect();
    for (n, len) in sizes.into_iter().enumerate() {
        let store = &stores[n % 2];
        let before = fs::read(store.operation_path(&id)).unwrap();
        let written = describe(store, &id, len).await;
        let entries = trail(store, &id);
        let bytes: u64 = entries.iter().map(|(_, b)| b.len() as u64).sum();
        assert!(
            bytes <= max_bytes,
            "write {n}: {bytes} trail bytes over {max_bytes}"
        );
        assert!(entries.len() <= 50, "write {n}: {} entries", entries.len());
        let newest = entries.last().expect("the write made an entry");
        assert_eq!(newest.0, written.seq);
        assert_eq!(
            newest.1, before,
            "the entry holds the file before the write"
        );
    }
    // Small files again: the trail fills up to its entry bound with them.
    for _ in 0..50 {
        describe(&stores[0], &id, 10).await;
    }
    let entries = trail(&stores[0], &id);
    let bytes = trail_bytes(&stores[0], &id);
    let one = entries.last().unwrap().1.len() as u64;
    assert!(bytes <= max_bytes);
    assert!(
        entries.len() == 50 || bytes + one > max_bytes,
        "{} entries of {bytes} bytes: room was left",
        entries.len()
    );
    assert!(entries.len() >= 40, "{} entries", entries.len());
}

#[tokio::test]
async fn heartbeat_only_writes_make_no_trail_entry() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        trail_keep: 3,
        ..FileStoreOptions::default()
    };
    let store = open(dir.path(), options);
    let id = op("op_beats");
    store.create(&sample("op_beats")).await.unwrap();
    describe(&store, &id, 1).await;
    for _ in 0..10 {
        beat(&store, &id).await;
    }
    let after_beats = fs::read(store.operation_path(&id)).unwrap();
    let written = describe(&store, &id, 2).await;
    assert_eq!(written.seq, 12, "heartbeats still count as writes");
    let entries = trail(&store, &id);
    assert_eq!(
        entries.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 12],
        "one entry per meaningful change"
    );
    assert_eq!(entries[1].1, after_beats, "the state before the change");
    // The entry bound counts entries, not writes.
    for n in 0..3 {
        beat(&store, &id).await;
        describe(&store, &id, 3 + n).await;
    }
    assert_eq!(trail(&store, &id).len(), 3);
}

#[tokio::test]
async fn a_version_larger_than_the_byte_bound_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        trail_max_bytes: 2_000,
        ..FileStoreOptions::default()
    };
    let store = open(dir.path(), options);
    let id = op("op_large");
    store.create(&sample("op_large")).await.unwrap();
    describe(&store, &id, 5_000).await;
    describe(&store, &id, 10).await;
    describe(&store, &id, 20).await;
    let seqs: Vec<u64> = trail(&store, &id).iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        vec![1, 3],
        "the large version (before write 2) was not kept"
    );
    assert!(trail_bytes(&store, &id) <= 2_000);
}

#[tokio::test]
async fn a_lost_trail_note_is_recounted_from_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        trail_keep: 5,
        trail_max_bytes: 6_000,
        ..FileStoreOptions::default()
    };
    let store = open(dir.path(), options);
    let id = op("op_note");
    store.create(&sample("op_note")).await.unwrap();
    for n in 0..8 {
        describe(&store, &id, 500 + n).await;
    }
    fs::write(store.lock_path(&id), b"not a note").unwrap();
    for n in 0..8 {
        describe(&store, &id, 900 + n).await;
        assert!(trail_bytes(&store, &id) <= 6_000);
        assert!(trail(&store, &id).len() <= 5);
    }
}

async fn append(store: &FileStore, id: &OperationId, n: usize) {
    let line = format!(
        "2026-01-01T00:00:00.000Z [INFO] line {n:05} {}",
        "y".repeat(40)
    );
    store.append_log(id, LogKind::Main, &line).await.unwrap();
}

fn numbers(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| l.split(" line ").nth(1))
        .map(|rest| rest[..5].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn logs_rotate_past_their_bound_and_read_as_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let max = 2_000;
    let options = FileStoreOptions {
        log_max_bytes: max,
        ..FileStoreOptions::default()
    };
    let store = open(dir.path(), options);
    let id = op("op_log");
    store.create(&sample("op_log")).await.unwrap();
    let live = store.log_path(&id, LogKind::Main);
    let rotated = dir.path().join(format!("{id}.operation.log.1"));
    // A follower reading as lines come sees every line once, in order, across rotations.
    let (mut followed, mut offset) = (Vec::new(), tom_dist_ledger::store::LogCursor::START);
    for n in 0..300 {
        append(&store, &id, n).await;
        let (text, next) = store.read_log(&id, LogKind::Main, offset).await.unwrap();
        followed.extend(numbers(&text));
        offset = next;
        assert!(fs::metadata(&live).unwrap().len() <= max + 100);
    }
    assert_eq!(followed, (0..300).collect::<Vec<_>>());
    assert!(rotated.is_file(), "the generation before is kept");
    assert!(fs::metadata(&rotated).unwrap().len() <= max + 200);
    let live_text = fs::read_to_string(&live).unwrap();
    assert!(
        live_text
            .lines()
            .next()
            .unwrap()
            .contains(" [INFO] LOG_ROTATED offset="),
        "{live_text}"
    );
    // Read from the start: what is kept, contiguous, up to the last line.
    let (text, _) = store
        .read_log(&id, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
        .await
        .unwrap();
    let kept = numbers(&text);
    assert_eq!(kept.last(), Some(&299));
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
    assert!(kept.len() < 300, "older generations were dropped");

    store.archive(&id).await.unwrap();
    let archive = store.archive_dir(&id);
    assert!(archive.join("operation.log.1").is_file());
    assert!(!rotated.exists());
    let (archived, _) = store
        .read_log(&id, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
        .await
        .unwrap();
    assert_eq!(numbers(&archived), kept, "the archive reads the same");
}

#[tokio::test]
async fn log_max_bytes_zero_never_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        log_max_bytes: 0,
        ..FileStoreOptions::default()
    };
    let store = open(dir.path(), options);
    let id = op("op_log_unbounded");
    store.create(&sample("op_log_unbounded")).await.unwrap();
    for n in 0..100 {
        append(&store, &id, n).await;
    }
    let (text, _) = store
        .read_log(&id, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
        .await
        .unwrap();
    assert_eq!(numbers(&text), (0..100).collect::<Vec<_>>());
    assert!(!dir.path().join(format!("{id}.operation.log.1")).exists());
}

/// A hand-edited (or hostile) ledger: a huge `seq` and a lock-file note claiming a huge
/// trail from entry 0. The next write must not walk a trillion numbers; it finishes
/// promptly and leaves the trail within its bounds.
#[test]
fn a_damaged_trail_note_costs_no_long_walk() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(async move {
            let options = FileStoreOptions {
                trail_keep: 3,
                trail_max_bytes: 100_000,
                ..FileStoreOptions::default()
            };
            let store = open(&base, options);
            let id = op("op_damaged_note");
            store.create(&sample("op_damaged_note")).await.unwrap();
            describe(&store, &id, 1).await;
            let mut data = store.read(&id).await.unwrap();
            let huge = 1_000_000_000_000u64;
            data.seq = huge;
            fs::write(store.operation_path(&id), data.to_json()).unwrap();
            let note = format!(
                "tom-ledger-trail seq={huge:020} from={:020} entries={:020} bytes={:020}\n",
                0, 99_999, 999_999_999
            );
            fs::write(store.lock_path(&id), note).unwrap();
            for n in 0..5 {
                describe(&store, &id, 10 + n).await;
            }
            (trail(&store, &id).len(), trail_bytes(&store, &id))
        });
        let _ = tx.send(result);
    });
    let (entries, bytes) = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the writes after a damaged note did not finish");
    assert!(entries <= 3, "{entries} entries");
    assert!(bytes <= 100_000);
}

/// Many heartbeat-only writes between two changes leave a long gap in the numbers; the
/// trail still keeps its bound in entries.
#[tokio::test]
async fn a_long_run_of_heartbeats_between_changes_keeps_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        trail_keep: 2,
        ..FileStoreOptions::default()
    };
    let store = open(dir.path(), options);
    let id = op("op_gap");
    store.create(&sample("op_gap")).await.unwrap();
    describe(&store, &id, 1).await;
    describe(&store, &id, 2).await;
    for _ in 0..300 {
        beat(&store, &id).await;
    }
    describe(&store, &id, 3).await;
    describe(&store, &id, 4).await;
    let seqs: Vec<u64> = trail(&store, &id).iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![303, 304]);
}

/// A log whose first line claims an absurd offset is read without panicking, and
/// rotation goes on from it.
#[tokio::test]
async fn a_log_claiming_an_absurd_offset_is_read_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        log_max_bytes: 500,
        ..FileStoreOptions::default()
    };
    let store = open(dir.path(), options);
    let id = op("op_absurd_log");
    store.create(&sample("op_absurd_log")).await.unwrap();
    let live = store.log_path(&id, LogKind::Main);
    let header = format!(
        "2026-01-01T00:00:00.000Z [INFO] LOG_ROTATED offset={} earlier lines are elsewhere\n",
        u64::MAX - 10
    );
    fs::write(&live, header).unwrap();
    for n in 0..30 {
        append(&store, &id, n).await;
    }
    let (text, _) = store
        .read_log(&id, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
        .await
        .unwrap();
    assert_eq!(numbers(&text).last(), Some(&29));
    let end = store.log_cursor(u64::MAX);
    let (_, next) = store.read_log(&id, LogKind::Main, end).await.unwrap();
    assert_eq!(store.log_offset(next), u64::MAX);
}
