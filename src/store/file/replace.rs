//! How a new operation file goes into place. The caller holds the operation lock.
//!
//! A change is written to a staging file that is then swapped with the operation file in
//! one `RENAME_EXCHANGE`: whoever opens the operation file gets the old or the new one,
//! never half of one and never none. The staging file is the next trail entry, so after
//! the swap the old inode is that entry without a copy or a link; with the trail
//! disabled it is the temp file, removed right after.
//!
//! Swapping rather than renaming over also keeps two costs out of the lock: ext4 starts
//! writing back a file that is renamed over an existing one (its guard for writers that
//! skip fsync), and the replaced inode would be freed inside the rename. Neither is needed
//! here: without `durable` the ledger guards against process crashes, not power loss (a
//! power cut may then leave the newest file empty; the trail has the states before it),
//! and with `durable` the staging file is synced before the swap.
//!
//! File systems without `RENAME_EXCHANGE` get the classic sequence: hard-link the old file
//! into the trail, rename the new one over it.

use std::fs;
use std::path::Path;

use super::io::{
    Content, exchange, exchange_unsupported, recycle_into, sync_dir, write_private,
    write_private_with,
};
use super::paths::Paths;
use super::trust;
use crate::error::{Error, Result};
use crate::ids::OperationId;

/// Write the first version of an operation file (nothing to replace).
pub fn create(paths: &Paths, op: &OperationId, bytes: &[u8], durable: bool) -> Result<()> {
    let (tmp, target) = (paths.temp(op), paths.operation(op));
    // A temp file left by a writer that died is replaced.
    write_private(&tmp, bytes, durable)?;
    fs::rename(&tmp, &target).map_err(|e| Error::io("rename into place", &target, e))?;
    if durable {
        sync_dir(paths.base())?;
    }
    Ok(())
}

/// Replace the operation file by `content` (streamed in); with `trail_seq`, the replaced file becomes that
/// trail entry. With `recycle`, the trail entry of that `seq` (about to be pruned) is
/// reused as the staging file when no reader holds it, instead of creating a new inode.
pub fn swap_in(
    paths: &Paths,
    op: &OperationId,
    content: Content<'_>,
    trail_seq: Option<u64>,
    recycle: Option<u64>,
    durable: bool,
) -> Result<bool> {
    let target = paths.operation(op);
    let mut moved = false;
    let staging = match trail_seq {
        Some(seq) => {
            // Never stage through a trail directory that is a symlink.
            trust::ensure_private_dir(&paths.trail_dir(op), "trail directory")?;
            let entry = paths.trail_entry(op, seq);
            let recycled = match recycle {
                Some(old) => recycle_into(&paths.trail_entry(op, old), &entry, content, durable)?,
                None => false,
            };
            moved = recycled;
            if !recycled {
                // An entry already there was staged by a writer that died before its
                // swap: it is replaced.
                write_private_with(&entry, content, durable)?;
            }
            entry
        }
        None => {
            write_private_with(&paths.temp(op), content, durable)?;
            paths.temp(op)
        }
    };
    match exchange(&staging, &target) {
        Ok(()) if trail_seq.is_none() => {
            fs::remove_file(&staging).map_err(|e| Error::io("remove", &staging, e))?;
        }
        Ok(()) => {}
        Err(e) if exchange_unsupported(&e) => match trail_seq {
            Some(_) => swap_by_link(paths, op, &staging, &target)?,
            None => fs::rename(&staging, &target)
                .map_err(|e| Error::io("rename into place", &target, e))?,
        },
        Err(e) => return Err(Error::io("swap into place", &target, e)),
    }
    if durable {
        sync_dir(paths.base())?;
        if trail_seq.is_some() {
            sync_dir(&paths.trail_dir(op))?;
        }
    }
    Ok(moved)
}

/// Without `RENAME_EXCHANGE`: move the staged file aside, link the current file into the
/// trail (or copy it, without hard links either), rename the staged file over it.
fn swap_by_link(paths: &Paths, op: &OperationId, entry: &Path, target: &Path) -> Result<()> {
    let tmp = paths.temp(op);
    fs::rename(entry, &tmp).map_err(|e| Error::io("move aside", entry, e))?;
    if let Err(link_err) = fs::hard_link(target, entry) {
        fs::copy(target, entry).map_err(|_| Error::io("link trail entry", entry, link_err))?;
    }
    fs::rename(&tmp, target).map_err(|e| Error::io("rename into place", target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_by_link_keeps_the_old_file_in_the_trail() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf());
        let op = OperationId::parse("op_fallback").unwrap();
        fs::write(paths.operation(&op), b"old").unwrap();
        fs::create_dir(paths.trail_dir(&op)).unwrap();
        let entry = paths.trail_entry(&op, 1);
        fs::write(&entry, b"new").unwrap();
        swap_by_link(&paths, &op, &entry, &paths.operation(&op)).unwrap();
        assert_eq!(fs::read(paths.operation(&op)).unwrap(), b"new");
        assert_eq!(fs::read(&entry).unwrap(), b"old");
        assert!(!paths.temp(&op).exists());
    }

    /// A writer on the fallback path that died between link and rename leaves the next
    /// trail name as a hard link to the live file: staging there must not write through it.
    #[test]
    fn staging_never_writes_through_a_leftover_link() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf());
        let op = OperationId::parse("op_leftover_link").unwrap();
        create(&paths, &op, b"live", false).unwrap();
        fs::create_dir(paths.trail_dir(&op)).unwrap();
        fs::hard_link(paths.operation(&op), paths.trail_entry(&op, 1)).unwrap();
        swap_in(
            &paths,
            &op,
            &|out| out.write_all(b"next"),
            Some(1),
            None,
            false,
        )
        .unwrap();
        assert_eq!(fs::read(paths.operation(&op)).unwrap(), b"next");
        assert_eq!(fs::read(paths.trail_entry(&op, 1)).unwrap(), b"live");
    }

    #[test]
    fn swap_without_trail_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf());
        let op = OperationId::parse("op_no_trail").unwrap();
        create(&paths, &op, b"old", false).unwrap();
        swap_in(&paths, &op, &|out| out.write_all(b"new"), None, None, true).unwrap();
        assert_eq!(fs::read(paths.operation(&op)).unwrap(), b"new");
        assert!(!paths.temp(&op).exists());
        assert!(!paths.trail_dir(&op).exists());
    }
}
