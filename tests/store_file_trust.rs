//! The `FileStore` trusts nothing in its directory that it did not create: retention prunes
//! only its own archives, no file is opened through a symlink, and a ledger directory that
//! others could write is refused. Every test works in its own temp directory, with
//! sentinel files and directories next to the ledger that must come through untouched.

mod common;
mod store_suite;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::process::Watchdog;
use store_suite::{op, sample};
use tom_dist_ledger::Error;
use tom_dist_ledger::ids::OperationId;
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, LogKind, Store};

/// A uid no file of the test machine belongs to (`nobody`).
const OTHER_UID: u32 = 65534;

/// Aborts the test binary if a test hangs (a planted fifo, a lock never released).
fn watchdog() -> Watchdog {
    Watchdog::new("store-file-trust", Duration::from_secs(120))
}

fn open(base: &Path, trail_keep: u64, max_backups: usize) -> tom_dist_ledger::Result<FileStore> {
    FileStore::open(
        base,
        FileStoreOptions {
            trail_keep,
            max_backups,
            durable: false,
            ..FileStoreOptions::default()
        },
    )
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

fn set_mtime(path: &Path, secs_since_epoch: u64) {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(secs_since_epoch);
    File::open(path).unwrap().set_modified(when).unwrap();
}

/// A directory with a sentinel file in it; returns the sentinel.
fn sentinel_dir(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let file = dir.join("keep.txt");
    fs::write(&file, format!("sentinel {}", dir.display())).unwrap();
    file
}

fn assert_sentinel(file: &Path) {
    let parent = file.parent().unwrap().display().to_string();
    assert_eq!(
        fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
        format!("sentinel {parent}"),
        "{} changed",
        file.display()
    );
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn untrusted_path(e: &Error) -> &Path {
    match e {
        Error::UntrustedEntry { path, .. } => path,
        other => panic!("expected an untrusted-entry refusal, got: {other}"),
    }
}

/// `--ledger .` in a project with a `backup/` of its own: 25 photo directories (older
/// than any archive, named like valid operation ids) stay whole while the oldest archives
/// go. Look-alikes stay too: a directory whose marker names another operation, one whose
/// `operation.json` holds another operation, an old-layout archive with an extra file.
#[tokio::test]
async fn retention_prunes_only_archives_the_store_wrote() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    let backup = project.join("backup");
    fs::create_dir(&project).unwrap();
    fs::set_permissions(&project, fs::Permissions::from_mode(0o755)).unwrap();
    let mut sentinels = Vec::new();
    for year in 2001..=2025 {
        let photos = backup.join(format!("photos-{year}"));
        sentinels.push(sentinel_dir(&photos));
        set_mtime(&photos, 100_000_000 + year);
    }
    let store = open(&project, 200, 3).unwrap();

    // Look-alikes, all older than every archive.
    let copied = backup.join("op_copied_marker");
    sentinels.push(sentinel_dir(&copied));
    fs::write(
        copied.join(".tom-ledger-archive"),
        "tom-dist-ledger archive of operation op_other\n",
    )
    .unwrap();
    // The old layout exactly, but holding another operation.
    let foreign = backup.join("op_foreign_json");
    fs::create_dir(&foreign).unwrap();
    let foreign_json = sample("op_other").to_json();
    fs::write(foreign.join("operation.json"), &foreign_json).unwrap();
    let extra = backup.join("op_legacy_extra");
    fs::create_dir_all(&extra).unwrap();
    fs::write(
        extra.join("operation.json"),
        sample("op_legacy_extra").to_json(),
    )
    .unwrap();
    sentinels.push(sentinel_dir(&extra));
    for dir in [&copied, &foreign, &extra] {
        set_mtime(dir, 200_000_000);
    }
    // An archive written before the marker existed: exactly the old layout.
    let legacy = backup.join("op_legacy");
    fs::create_dir_all(legacy.join("trail")).unwrap();
    fs::write(legacy.join("operation.json"), sample("op_legacy").to_json()).unwrap();
    fs::write(legacy.join("operation.log"), "").unwrap();
    set_mtime(&legacy, 300_000_000);

    let ids: Vec<String> = (1..=6).map(|n| format!("op_archive_{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        store.create(&sample(id)).await.unwrap();
        store.archive(&op(id)).await.unwrap();
        set_mtime(&store.archive_dir(&op(id)), 400_000_000 + n as u64);
    }

    for sentinel in &sentinels {
        assert_sentinel(sentinel);
    }
    for year in 2001..=2025 {
        assert!(backup.join(format!("photos-{year}")).is_dir());
    }
    assert!(extra.join("operation.json").is_file());
    assert_eq!(
        fs::read(foreign.join("operation.json")).unwrap(),
        foreign_json
    );
    assert!(copied.join(".tom-ledger-archive").is_file());
    assert!(
        !legacy.exists(),
        "the old-layout archive is the oldest archive"
    );
    let kept: Vec<OperationId> = ids[3..].iter().map(|id| op(id)).collect();
    let archived = store.list_archived().await.unwrap();
    for id in &ids[..3] {
        assert!(!store.archive_dir(&op(id)).exists(), "{id} not pruned");
    }
    for id in &kept {
        assert!(archived.contains(id), "{id} pruned: {archived:?}");
    }
}

/// A `backup` that is a symlink is refused: the store does not open on it, and an archive
/// into it (swapped in after opening) fails naming the path. Nothing is written into the
/// target, nothing pruned there, and the operation stays live.
#[tokio::test]
async fn a_symlinked_backup_is_refused() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ledger");
    let elsewhere = dir.path().join("elsewhere");
    let sentinels: Vec<PathBuf> = (1..=4)
        .map(|n| sentinel_dir(&elsewhere.join(format!("op_old_{n}"))))
        .collect();
    let before = names(&elsewhere);

    let store = open(&base, 200, 1).unwrap();
    let id = op("op_backup_link");
    store.create(&sample(id.as_str())).await.unwrap();
    fs::remove_dir(base.join("backup")).unwrap();
    symlink(&elsewhere, base.join("backup")).unwrap();

    let err = store.archive(&id).await.unwrap_err();
    assert_eq!(untrusted_path(&err), base.join("backup"), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(store.read(&id).await.is_ok(), "the operation stays live");
    assert!(store.list_archived().await.is_err());

    let err = open(&base, 200, 1).unwrap_err();
    assert_eq!(untrusted_path(&err), base.join("backup"), "{err}");

    assert_eq!(names(&elsewhere), before);
    for sentinel in &sentinels {
        assert_sentinel(sentinel);
        assert_eq!(names(sentinel.parent().unwrap()).len(), 1);
    }
}

/// A log replaced by a symlink is never appended through: the append and the read fail
/// naming the log, and the target keeps its content. An operation whose log name is
/// already a symlink is not created.
#[tokio::test]
async fn a_symlinked_log_is_refused() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ledger");
    let target = sentinel_dir(&dir.path().join("outside"));
    let store = open(&base, 200, 20).unwrap();
    let id = op("op_log_link");
    store.create(&sample(id.as_str())).await.unwrap();
    for kind in [LogKind::Main, LogKind::Debug] {
        let log = store.log_path(&id, kind);
        fs::remove_file(&log).unwrap();
        symlink(&target, &log).unwrap();
        let err = store.append_log(&id, kind, "line").await.unwrap_err();
        assert_eq!(untrusted_path(&err), log, "{err}");
        let err = store
            .read_log(&id, kind, tom_dist_ledger::store::LogCursor::START)
            .await
            .unwrap_err();
        assert_eq!(untrusted_path(&err), log, "{err}");
    }
    assert_sentinel(&target);

    let planted = op("op_planted_log");
    symlink(&target, store.log_path(&planted, LogKind::Main)).unwrap();
    let err = store.create(&sample(planted.as_str())).await.unwrap_err();
    assert_eq!(
        untrusted_path(&err),
        store.log_path(&planted, LogKind::Main)
    );
    assert!(!store.operation_path(&planted).exists());
    assert_sentinel(&target);
}

/// A trail entry swapped for a symlink is never reused as a staging file: many writes
/// later (the trail cycled four times) its target is untouched, every write succeeded and
/// the trail holds only regular files again.
#[tokio::test]
async fn a_trail_entry_swapped_for_a_symlink_is_never_written_through() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ledger");
    let target = sentinel_dir(&dir.path().join("outside"));
    let other_owner = sentinel_dir(&dir.path().join("outside-owned"));
    let keep = 4;
    let store = open(&base, keep, 20).unwrap();
    let id = op("op_trail_link");
    store.create(&sample(id.as_str())).await.unwrap();
    for _ in 0..keep {
        touch(&store, &id).await;
    }
    // Entry 1 is the next to be recycled; entry 2 the one after.
    let entry = |seq: u64| store.trail_dir(&id).join(format!("{seq:08}_{id}.json"));
    fs::remove_file(entry(1)).unwrap();
    symlink(&target, entry(1)).unwrap();
    // A hard link to another user's file must not be reused either.
    fs::remove_file(entry(2)).unwrap();
    std::os::unix::fs::chown(&other_owner, Some(OTHER_UID), None).unwrap();
    fs::hard_link(&other_owner, entry(2)).unwrap();

    for _ in 0..4 * keep {
        touch(&store, &id).await;
    }
    assert_sentinel(&target);
    assert_sentinel(&other_owner);
    let data = store.read(&id).await.unwrap();
    assert_eq!(data.seq, 5 * keep);
    let trail = names(&store.trail_dir(&id));
    assert_eq!(trail.len() as u64, keep, "{trail:?}");
    for name in &trail {
        let meta = fs::symlink_metadata(store.trail_dir(&id).join(name)).unwrap();
        assert!(meta.is_file(), "{name} is not a regular file");
    }
}

/// A trail directory or lock file replaced by a symlink is refused with an error naming
/// it; nothing is created or changed in the target, and the operation file stays as it was.
#[tokio::test]
async fn a_symlinked_trail_directory_or_lock_file_is_refused() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ledger");
    let target_dir = dir.path().join("outside-dir");
    let sentinel = sentinel_dir(&target_dir);
    let target_file = sentinel_dir(&dir.path().join("outside-file"));
    let store = open(&base, 200, 20).unwrap();
    let id = op("op_dir_link");
    store.create(&sample(id.as_str())).await.unwrap();
    touch(&store, &id).await;
    let written = fs::read(store.operation_path(&id)).unwrap();

    fs::remove_dir_all(store.trail_dir(&id)).unwrap();
    symlink(&target_dir, store.trail_dir(&id)).unwrap();
    let err = store.modify(&id, &mut |_| Ok(())).await.unwrap_err();
    assert_eq!(untrusted_path(&err), store.trail_dir(&id), "{err}");
    assert_eq!(names(&target_dir), BTreeSet::from(["keep.txt".to_string()]));
    assert_sentinel(&sentinel);
    assert_eq!(fs::read(store.operation_path(&id)).unwrap(), written);
    fs::remove_file(store.trail_dir(&id)).unwrap();

    fs::remove_file(store.lock_path(&id)).unwrap();
    symlink(&target_file, store.lock_path(&id)).unwrap();
    let err = store.modify(&id, &mut |_| Ok(())).await.unwrap_err();
    assert_eq!(untrusted_path(&err), store.lock_path(&id), "{err}");
    assert_sentinel(&target_file);
    assert_eq!(fs::read(store.operation_path(&id)).unwrap(), written);
}

/// An operation file that is a symlink or a fifo is refused by name, without hanging.
#[tokio::test]
async fn an_operation_file_that_is_a_symlink_or_a_fifo_is_refused() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ledger");
    let store = open(&base, 200, 20).unwrap();
    let outside = dir.path().join("outside.json");
    let linked = op("op_linked");
    fs::write(&outside, sample(linked.as_str()).to_json()).unwrap();
    let before = fs::read(&outside).unwrap();
    symlink(&outside, store.operation_path(&linked)).unwrap();
    let err = store.read(&linked).await.unwrap_err();
    assert_eq!(untrusted_path(&err), store.operation_path(&linked), "{err}");
    let err = store.modify(&linked, &mut |_| Ok(())).await.unwrap_err();
    assert_eq!(untrusted_path(&err), store.operation_path(&linked), "{err}");
    assert_eq!(fs::read(&outside).unwrap(), before);

    let fifo = op("op_fifo");
    nix::unistd::mkfifo(
        &store.operation_path(&fifo),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let err = store.read(&fifo).await.unwrap_err();
    assert_eq!(untrusted_path(&err), store.operation_path(&fifo), "{err}");
    assert!(err.to_string().contains("fifo"), "{err}");
}

/// A ledger directory that another user owns, or that group or others can write, is
/// refused with a message that says how to fix it; nothing is created in it and its mode
/// stays as it was.
#[test]
fn a_ledger_directory_others_could_write_is_refused() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, u32, Option<u32>, &str); 5] = [
        (
            "open-to-all",
            0o777,
            None,
            "is writable by group and others (mode 0777): run `chmod 700 ",
        ),
        (
            "group",
            0o770,
            None,
            "is writable by group (mode 0770): run `chmod 700 ",
        ),
        (
            "others",
            0o703,
            None,
            "is writable by others (mode 0703): run `chmod 700 ",
        ),
        (
            "shared",
            0o1777,
            None,
            "is writable by group and others (mode 1777): use a ledger directory of your own",
        ),
        (
            "stranger",
            0o700,
            Some(OTHER_UID),
            "is owned by uid 65534, not by you (uid ",
        ),
    ];
    for (name, mode, owner, expected) in cases {
        let base = dir.path().join(name);
        fs::create_dir(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&base, Some(uid), None).unwrap();
        }
        let err = open(&base, 200, 20).unwrap_err();
        assert!(
            matches!(&err, Error::UntrustedLedgerDir { path, .. } if path == &base),
            "{name}: {err}"
        );
        let message = err.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.contains(&base.display().to_string()), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(
            fs::read_dir(&base).unwrap().next().is_none(),
            "{name}: created something"
        );
        let meta = fs::metadata(&base).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{name}: mode changed");
        assert_eq!(meta.uid(), owner.unwrap_or(meta.uid()));
    }
    let fine = dir.path().join("fine");
    fs::create_dir(&fine).unwrap();
    fs::set_permissions(&fine, fs::Permissions::from_mode(0o755)).unwrap();
    open(&fine, 200, 20).expect("a directory only its owner can write is fine");
}

/// An archive directory swapped for a symlink is neither read nor appended through, and
/// is not listed; the files of its target keep their content.
#[tokio::test]
async fn a_symlinked_archive_directory_is_refused() {
    let _watchdog = watchdog();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ledger");
    let store = open(&base, 200, 20).unwrap();
    let id = op("op_archive_link");
    store.create(&sample(id.as_str())).await.unwrap();
    store
        .append_log(&id, LogKind::Main, "before")
        .await
        .unwrap();
    store.archive(&id).await.unwrap();
    let moved = dir.path().join("moved-archive");
    fs::rename(store.archive_dir(&id), &moved).unwrap();
    symlink(&moved, store.archive_dir(&id)).unwrap();
    let before = snapshot_files(&moved);

    let err = store.read_archived(&id).await.unwrap_err();
    assert_eq!(untrusted_path(&err), store.archive_dir(&id), "{err}");
    let err = store
        .append_log(&id, LogKind::Main, "after")
        .await
        .unwrap_err();
    assert_eq!(untrusted_path(&err), store.archive_dir(&id), "{err}");
    assert!(store.list_archived().await.unwrap().is_empty());
    assert_eq!(snapshot_files(&moved), before);
}

fn snapshot_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}
