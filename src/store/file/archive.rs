//! The archive: `backup/{op}/` holds a finished operation, its logs and its trail; the
//! newest `max_backups` archives are kept.
//!
//! The operation file moves last: until it has moved the operation is live, so an archive
//! interrupted half-way is simply done again (what already moved stays; logs are found in
//! the archive by readers and appenders meanwhile).

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::io::{create_private_dir, rename_if_present, sync_dir};
use super::lock::OpLock;
use super::paths::Paths;
use super::trail;
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;
use crate::store::LogKind;

/// Move `op` into the archive, holding its `lock`. Returns the archive directory.
pub fn archive(paths: &Paths, op: &OperationId, lock: OpLock, durable: bool) -> Result<PathBuf> {
    let current = paths.operation(op);
    if !current.exists() {
        return Err(Error::OperationNotFound(op.clone()));
    }
    let dir = paths.archive_dir(op);
    create_private_dir(&paths.backup_dir())?;
    create_private_dir(&dir)?;
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
    if let Ok(Ok(last)) = fs::read(&current).map(|b| LedgerData::from_json(&b)) {
        trail::remove_entries(paths, op, |n| n > last.seq);
    }
    let trail = paths.trail_dir(op);
    let archived_trail = paths.archived_trail(op);
    if trail.exists() && archived_trail.exists() {
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

/// Keep the newest `max` archives, by archive time and then name; 0 keeps none.
pub fn enforce_retention(paths: &Paths, max: usize) -> Result<()> {
    let backup = paths.backup_dir();
    let mut dirs: Vec<(SystemTime, PathBuf)> = fs::read_dir(&backup)
        .map_err(|e| Error::io("list", &backup, e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            (modified, e.path())
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
    let entries = match fs::read_dir(&backup) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &backup, e)),
    };
    let mut ids: Vec<OperationId> = entries
        .flatten()
        .filter_map(|e| OperationId::parse(e.file_name().to_str()?).ok())
        .filter(|op| paths.archived_operation(op).is_file())
        .collect();
    ids.sort();
    Ok(ids)
}
