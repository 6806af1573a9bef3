//! The archive: `backup/{op}/` holds a finished operation, its logs and its trail; the
//! newest `max_backups` archives are kept.
//!
//! The operation file moves last: until it has moved the operation is live, so an archive
//! interrupted half-way is simply done again (what already moved stays; logs are found in
//! the archive by readers and appenders meanwhile).
//!
//! `backup/` may hold things that are not archives (`--ledger .` in a project with a
//! `backup/` of its own), so retention prunes only directories the store provably wrote:
//! each archive gets a marker file, written before anything moves in, naming its
//! operation. Archives written before the marker existed (and by the original) are
//! recognised by their exact layout instead: nothing but `operation.json`,
//! `operation.log`, `operation.debug.log` and `trail`, with an `operation.json` that
//! holds the operation the directory is named after. Anything else is never touched, and
//! a `backup` that is a symlink or not this user's directory is refused.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::io::{read_whole, rename_if_present, sync_dir, write_private};
use super::lock::OpLock;
use super::paths::Paths;
use super::trail;
use super::trust::{self, Owner, open_entry};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;
use crate::store::LogKind;

/// Move `op` into the archive, holding its `lock`. Returns the archive directory.
pub fn archive(paths: &Paths, op: &OperationId, lock: OpLock, durable: bool) -> Result<PathBuf> {
    let current = paths.operation(op);
    if !trust::present(&current) {
        return Err(Error::OperationNotFound(op.clone()));
    }
    let dir = paths.archive_dir(op);
    trust::ensure_private_dir(&paths.backup_dir(), "archive directory")?;
    trust::ensure_private_dir(&dir, "archive directory")?;
    // First, so that an archive interrupted half-way is still known to be ours.
    write_private(
        &paths.archive_marker(op),
        marker_text(op).as_bytes(),
        durable,
    )?;
    for kind in [LogKind::Main, LogKind::Debug] {
        rename_if_present(
            &paths.rotated_log(op, kind),
            &paths.archived_rotated_log(op, kind),
            "move into archive",
        )?;
        rename_if_present(
            &paths.log(op, kind),
            &paths.archived_log(op, kind),
            "move into archive",
        )?;
    }
    // Entries numbered above the final `seq` were staged by writers that died.
    if let Ok(Ok(last)) = read_whole(&current).map(|b| LedgerData::from_json(&b)) {
        trail::remove_entries(paths, op, |n| n > last.seq);
    }
    let trail = paths.trail_dir(op);
    let archived_trail = paths.archived_trail(op);
    if trust::present(&trail) && trust::present(&archived_trail) {
        // Left by an interrupted archive; the live trail is newer.
        fs::remove_dir_all(&archived_trail)
            .map_err(|e| Error::io("replace archived trail", &archived_trail, e))?;
    }
    rename_if_present(&trail, &archived_trail, "move into archive")?;
    rename_if_present(&current, &paths.archived_operation(op), "move into archive")?;
    if durable {
        sync_dir(&dir)?;
        sync_dir(&paths.backup_dir())?;
        sync_dir(paths.base())?;
    }
    let _ = fs::remove_file(paths.temp(op));
    lock.remove(paths, op);
    Ok(dir)
}

/// Keep the newest `max` archives, by archive time and then name; 0 keeps none. Only
/// archives the store wrote count and are pruned; everything else in `backup/` stays.
pub fn enforce_retention(paths: &Paths, max: usize) -> Result<()> {
    let backup = checked_backup_dir(paths)?;
    let mut dirs: Vec<(SystemTime, PathBuf)> = fs::read_dir(&backup)
        .map_err(|e| Error::io("list", &backup, e))?
        .flatten()
        .filter_map(|e| {
            let op = OperationId::parse(e.file_name().to_str()?).ok()?;
            // `DirEntry::metadata` does not follow a symlink.
            let meta = e.metadata().ok()?;
            let ours =
                meta.is_dir() && meta.uid() == trust::my_uid() && is_store_archive(paths, &op);
            ours.then(|| (meta.modified().unwrap_or(UNIX_EPOCH), e.path()))
        })
        .collect();
    if dirs.len() <= max {
        return Ok(());
    }
    dirs.sort();
    let excess = dirs.len() - max;
    for (_, dir) in dirs.into_iter().take(excess) {
        // Another process may be pruning the same directory.
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Ids of the archived operations, sorted; directories that are not archives are skipped.
pub fn list(paths: &Paths) -> Result<Vec<OperationId>> {
    let backup = paths.backup_dir();
    match fs::symlink_metadata(&backup) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("stat", &backup, e)),
        Ok(meta) => trust::check_dir(&backup, &meta, "archive directory")?,
    };
    let entries = fs::read_dir(&backup).map_err(|e| Error::io("list", &backup, e))?;
    let mut ids: Vec<OperationId> = entries
        .flatten()
        .filter_map(|e| OperationId::parse(e.file_name().to_str()?).ok())
        .filter(|op| {
            trust::is_own_dir(&paths.archive_dir(op))
                && fs::symlink_metadata(paths.archived_operation(op)).is_ok_and(|m| m.is_file())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// `backup/`, refused unless it is a real directory of this user.
fn checked_backup_dir(paths: &Paths) -> Result<PathBuf> {
    let backup = paths.backup_dir();
    let meta = fs::symlink_metadata(&backup).map_err(|e| Error::io("stat", &backup, e))?;
    trust::check_dir(&backup, &meta, "archive directory")?;
    Ok(backup)
}

/// What the marker of the archive of `op` holds.
fn marker_text(op: &OperationId) -> String {
    format!("tom-dist-ledger archive of operation {op}\n")
}

/// Names an archive written before the marker existed may hold, and nothing else.
const LEGACY_NAMES: [&str; 4] = [
    "operation.json",
    "operation.log",
    "operation.debug.log",
    "trail",
];

/// True when `backup/{op}` (already known to be a directory of this user) is an archive
/// this store wrote: it carries the marker naming `op`, or it has exactly the layout of an
/// archive from before the marker, holding `op` (see the module notes).
fn is_store_archive(paths: &Paths, op: &OperationId) -> bool {
    let expected = marker_text(op);
    let marker = open_entry(
        fs::OpenOptions::new().read(true),
        &paths.archive_marker(op),
        0,
        Owner::Me,
        "read",
    );
    if let Ok((file, _)) = marker {
        let mut found = Vec::with_capacity(expected.len() + 1);
        return file
            .take(expected.len() as u64 + 1)
            .read_to_end(&mut found)
            .is_ok_and(|_| found == expected.as_bytes());
    }
    is_legacy_archive(paths, op)
}

fn is_legacy_archive(paths: &Paths, op: &OperationId) -> bool {
    let Ok(entries) = fs::read_dir(paths.archive_dir(op)) else {
        return false;
    };
    let only_archive_names = entries.into_iter().all(|e| {
        e.is_ok_and(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|name| LEGACY_NAMES.contains(&name))
        })
    });
    only_archive_names
        && read_whole(&paths.archived_operation(op))
            .ok()
            .and_then(|bytes| LedgerData::from_json(&bytes).ok())
            .is_some_and(|data| &data.operation_id == op)
}
