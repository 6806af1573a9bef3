//! The `FileStore` on disk: modes, damaged and foreign files, leftovers of crashed writers.

mod common;
mod store_suite;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{CHILD_ENV, run_alone_in_child};
use store_suite::{frame, op, participant, sample};
use tom_dist_ledger::Error;
use tom_dist_ledger::ids::OperationId;
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, LogKind, Store};

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, FileStoreOptions::default()).expect("open ledger")
}

/// Create, change, log and archive, so that every kind of file and directory exists.
async fn exercise(store: &FileStore) {
    for id in ["op_live", "op_done"] {
        let id = op(id);
        store.create(&sample(id.as_str())).await.unwrap();
        store.modify(&id, &mut |_| Ok(())).await.unwrap();
        store.append_log(&id, LogKind::Main, "line").await.unwrap();
        store.append_log(&id, LogKind::Debug, "line").await.unwrap();
    }
    store.archive(&op("op_done")).await.unwrap();
}

/// Every file below `base` is 0600 and every directory 0700 (`base` included).
fn assert_private(base: &Path) {
    let mut seen = 0;
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
                assert_eq!(mode, 0o600, "{}", path.display());
                seen += 1;
            }
        }
    }
    // op_live: file, lock, two logs, trail entry; op_done: file, two logs, trail entry.
    assert!(seen >= 9, "only {seen} files checked");
}

#[tokio::test]
async fn files_are_0600_and_directories_0700() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("nested/ledger");
    let store = open(&base);
    exercise(&store).await;
    assert_private(&base);
    assert_private(&dir.path().join("nested"));
}

#[tokio::test]
async fn modes_do_not_depend_on_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    run_alone_in_child("under_umask_0277", dir.path());
}

#[tokio::test]
#[ignore = "run by modes_do_not_depend_on_the_umask in a child process"]
async fn under_umask_0277() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // Takes the owner's write bit away too: plain `mode(0o600)` would give 0400 files.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o277));
    let base = Path::new(&dir).join("ledger");
    let store = open(&base);
    exercise(&store).await;
    assert_private(&base);
}

#[tokio::test]
async fn corrupt_file_is_reported_with_its_path_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = op("op_corrupt");
    store.create(&sample("op_corrupt")).await.unwrap();
    store.modify(&id, &mut |_| Ok(())).await.unwrap();
    let path = store.operation_path(&id);
    let valid = fs::read(&path).unwrap();
    let trail_before = fs::read_dir(store.trail_dir(&id)).unwrap().count();
    for damaged in [
        b"{ not json".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        Vec::new(),
    ] {
        fs::write(&path, &damaged).unwrap();
        let mut called = false;
        let err = store
            .modify(&id, &mut |_| {
                called = true;
                Ok(())
            })
            .await
            .unwrap_err();
        match &err {
            Error::Corrupt { path: p, .. } => assert_eq!(p, &path),
            other => panic!("expected corrupt, got {other:?}"),
        }
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(
            !called,
            "the change must not run on data that did not parse"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            damaged,
            "the damaged file is left as it was"
        );
        assert!(matches!(store.read(&id).await, Err(Error::Corrupt { .. })));
    }
    assert_eq!(
        fs::read_dir(store.trail_dir(&id)).unwrap().count(),
        trail_before
    );
    assert!(!store.temp_path(&id).exists());
    // Restoring from the trail brings it back.
    let entry = store.trail_dir(&id).join(format!("00000001_{id}.json"));
    fs::copy(entry, &path).unwrap();
    assert_eq!(store.modify(&id, &mut |_| Ok(())).await.unwrap().seq, 1);
}

#[tokio::test]
async fn file_holding_another_or_an_invalid_id_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = op("op_mine");
    fs::write(store.operation_path(&id), sample("op_theirs").to_json()).unwrap();
    let err = store.read(&id).await.unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("op_theirs"),
        "{err}"
    );
    // An id that would escape the directory never becomes an `OperationId`.
    let evil = String::from_utf8(sample("op_mine").to_json())
        .unwrap()
        .replace("\"op_mine\"", "\"../evil\"");
    fs::write(store.operation_path(&id), evil).unwrap();
    let err = store.modify(&id, &mut |_| Ok(())).await.unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("../evil"),
        "{err}"
    );
    assert!(OperationId::parse("../evil").is_err());
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/original")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn ledger_written_by_the_original_is_read_and_modified() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ids = Vec::new();
    for name in [
        "running.operation.json",
        "legacy_stack.operation.json",
        "cleanup.operation.json",
    ] {
        let bytes = fixture(name);
        let data = LedgerData::from_json(&bytes).unwrap();
        // The original wrote no lock file that outlives a write, and may lack logs.
        fs::write(store.operation_path(&data.operation_id), &bytes).unwrap();
        ids.push(data.operation_id);
    }
    ids.sort();
    assert_eq!(store.list().await.unwrap(), ids);

    let running = op("20260122T14:30:45.123-cli-a1b2c3d4");
    let original = fixture("running.operation.json");
    let written = store
        .modify(&running, &mut |d| {
            d.call_frames
                .push(frame(&participant("cli"), "call_cli_2_0002"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(written.seq, 1);
    assert_eq!(written.call_frames.len(), 3);
    let entry = store
        .trail_dir(&running)
        .join(format!("00000001_{running}.json"));
    assert_eq!(
        fs::read(entry).unwrap(),
        original,
        "the trail keeps the original bytes"
    );
    let text = fs::read_to_string(store.operation_path(&running)).unwrap();
    assert!(
        text.contains("\"callFrames\"") && text.contains("\"seq\": 1"),
        "{text}"
    );
    assert!(text.contains("\"registeredAt\": \"2026-01-22T"), "{text}");
    assert!(
        !text.contains(".001\""),
        "timestamps are rewritten as UTC with `Z`: {text}"
    );
    let reread = store.read(&running).await.unwrap();
    assert_eq!(
        (reread.seq, reread.call_frames),
        (written.seq, written.call_frames)
    );

    let legacy = op("op_legacy");
    let written = store.modify(&legacy, &mut |_| Ok(())).await.unwrap();
    assert_eq!(
        written.call_frames.len(),
        1,
        "frames of the legacy `stack` key are kept"
    );
    let text = fs::read_to_string(store.operation_path(&legacy)).unwrap();
    assert!(
        text.contains("\"callFrames\"") && !text.contains("\"stack\""),
        "{text}"
    );

    // Missing logs are started on the first append, and the operation archives.
    store
        .append_log(&legacy, LogKind::Main, "joined")
        .await
        .unwrap();
    assert_eq!(
        store
            .read_log(
                &legacy,
                LogKind::Main,
                tom_dist_ledger::store::LogCursor::START
            )
            .await
            .unwrap()
            .0,
        "joined\n"
    );
    store.archive(&legacy).await.unwrap();
    assert_eq!(store.read_archived(&legacy).await.unwrap().seq, 1);
}

#[tokio::test]
async fn list_skips_names_that_are_not_operations() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(&sample("op_real")).await.unwrap();
    store.create(&sample("op_archived")).await.unwrap();
    store.archive(&op("op_archived")).await.unwrap();
    let base = dir.path();
    for junk in [
        "bad name.operation.json",
        ".hidden.operation.json",
        "a..b.operation.json",
        "notes.txt",
        "op_x.operation.json.lock",
        ".op_x.operation.json.tmp",
        ".operation.json",
    ] {
        fs::write(base.join(junk), b"{}").unwrap();
    }
    fs::create_dir(base.join("dir.operation.json")).unwrap();
    fs::create_dir_all(base.join("backup/not an id")).unwrap();
    fs::write(base.join("backup/not an id/operation.json"), b"{}").unwrap();
    fs::create_dir_all(base.join("backup/op_empty")).unwrap();
    fs::write(base.join("backup/stray.txt"), b"").unwrap();
    assert_eq!(store.list().await.unwrap(), vec![op("op_real")]);
    assert_eq!(
        store.list_archived().await.unwrap(),
        vec![op("op_archived")]
    );
}

/// Half a file, with the modes of a careless tool: what a writer that died mid-write leaves.
fn leave_half_a_file(path: &Path) {
    fs::write(path, b"{\"operationId\": \"op_lef").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
}

async fn abort(store: &FileStore, id: &OperationId) -> LedgerData {
    store
        .modify(id, &mut |d| {
            d.aborted = true;
            Ok(())
        })
        .await
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn temp_file_left_by_a_crashed_writer_does_not_break_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        trail_keep: 0,
        ..FileStoreOptions::default()
    };
    let store = FileStore::open(dir.path(), options).unwrap();
    let id = op("op_leftover");
    store.create(&sample("op_leftover")).await.unwrap();
    let tmp = store.temp_path(&id);
    leave_half_a_file(&tmp);
    let written = abort(&store, &id).await;
    assert_eq!(store.read(&id).await.unwrap(), written);
    assert!(!tmp.exists());
    assert_eq!(mode(&store.operation_path(&id)), 0o600);
    // A leftover confuses neither listing nor archiving, which removes it.
    leave_half_a_file(&tmp);
    assert_eq!(store.list().await.unwrap(), vec![id.clone()]);
    store.archive(&id).await.unwrap();
    assert!(!tmp.exists());
}

#[tokio::test]
async fn trail_entry_staged_by_a_crashed_writer_is_replaced_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = op("op_staged");
    store.create(&sample("op_staged")).await.unwrap();
    abort(&store, &id).await;
    // A writer of seq 2 died after staging its new content under the trail name.
    let staged = store.trail_dir(&id).join(format!("00000002_{id}.json"));
    leave_half_a_file(&staged);
    let before = fs::read(store.operation_path(&id)).unwrap();
    let written = abort(&store, &id).await;
    assert_eq!(written.seq, 2);
    assert_eq!(store.read(&id).await.unwrap(), written);
    assert_eq!(
        fs::read(&staged).unwrap(),
        before,
        "entry 2 is the state before seq 2"
    );
    assert_eq!(mode(&store.operation_path(&id)), 0o600);
    // One that nobody overwrote is dropped with the archive.
    let stray = store.trail_dir(&id).join(format!("00000003_{id}.json"));
    leave_half_a_file(&stray);
    store.archive(&id).await.unwrap();
    let trail = store.archive_dir(&id).join("trail");
    assert!(trail.join(format!("00000002_{id}.json")).is_file());
    assert!(!trail.join(format!("00000003_{id}.json")).exists());
}

#[tokio::test]
async fn read_log_hands_out_whole_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = op("op_partial_line");
    store.create(&sample("op_partial_line")).await.unwrap();
    store.append_log(&id, LogKind::Main, "whole").await.unwrap();
    // Another writer is half-way through a line.
    let path = store.log_path(&id, LogKind::Main);
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, b"half of").unwrap();
    let (text, next) = store
        .read_log(&id, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
        .await
        .unwrap();
    assert_eq!((text.as_str(), store.log_offset(next)), ("whole\n", 6));
    std::io::Write::write_all(&mut file, b" a line\n").unwrap();
    let (text, next) = store.read_log(&id, LogKind::Main, next).await.unwrap();
    assert_eq!(
        (text.as_str(), store.log_offset(next)),
        ("half of a line\n", 21)
    );
}

#[tokio::test]
async fn interrupted_archive_is_finished_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = op("op_half_archived");
    store.create(&sample("op_half_archived")).await.unwrap();
    store.modify(&id, &mut |_| Ok(())).await.unwrap();
    store
        .append_log(&id, LogKind::Main, "before")
        .await
        .unwrap();
    // An archive that died after moving the main log and the trail.
    let archive = store.archive_dir(&id);
    fs::create_dir_all(&archive).unwrap();
    fs::rename(
        store.log_path(&id, LogKind::Main),
        archive.join("operation.log"),
    )
    .unwrap();
    fs::rename(store.trail_dir(&id), archive.join("trail")).unwrap();
    // The operation is still live, and its log is found where it went.
    store.modify(&id, &mut |_| Ok(())).await.unwrap();
    store.append_log(&id, LogKind::Main, "after").await.unwrap();
    assert!(
        !store.log_path(&id, LogKind::Main).exists(),
        "no second log is started"
    );
    assert_eq!(
        store
            .read_log(&id, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
            .await
            .unwrap()
            .0,
        "before\nafter\n"
    );
    store.archive(&id).await.unwrap();
    assert_eq!(store.read_archived(&id).await.unwrap().seq, 2);
    assert_eq!(
        store
            .read_log(&id, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
            .await
            .unwrap()
            .0,
        "before\nafter\n"
    );
    assert!(
        archive
            .join("trail")
            .join(format!("00000002_{id}.json"))
            .is_file()
    );
    assert_eq!(store.list().await.unwrap(), vec![]);
}
