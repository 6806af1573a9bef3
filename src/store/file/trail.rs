//! The trail: `{op}_trail/{seq:08}_{op}.json` holds the operation file as it was before
//! modification `seq`, so a damaged ledger can be restored by hand.
//!
//! A snapshot costs no copy: the operation file is never written in place, so hard-linking
//! it into the trail just before the rename keeps the old inode, byte for byte, under the
//! new name. Names come from `seq`, which only the lock holder moves, so they never
//! collide; pruning needs no lock for the same reason.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::io::create_private_dir;
use super::paths::{self, Paths};
use crate::error::{Error, Result};
use crate::ids::OperationId;

/// Record `current` (the operation file, before the write that makes it `seq`) in the trail.
/// The caller holds the operation lock.
pub fn record(paths: &Paths, op: &OperationId, current: &Path, seq: u64) -> Result<()> {
    let entry = paths.trail_entry(op, seq);
    match fs::hard_link(current, &entry) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            create_private_dir(&paths.trail_dir(op))?;
            link_or_copy(current, &entry)
        }
        // Left by a writer that died between link and rename, or by a `seq` edited by
        // hand: the entry for this `seq` is the file we are about to replace.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            fs::remove_file(&entry).map_err(|e| Error::io("replace trail entry", &entry, e))?;
            link_or_copy(current, &entry)
        }
        Err(_) => link_or_copy(current, &entry),
    }
}

/// Hard link, or a copy where the file system has no hard links.
fn link_or_copy(current: &Path, entry: &Path) -> Result<()> {
    match fs::hard_link(current, entry) {
        Ok(()) => Ok(()),
        Err(link_err) => match fs::copy(current, entry) {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::io("link trail entry", entry, link_err)),
        },
    }
}

/// Drop entries beyond `keep` after write `seq`. Runs outside the lock, and failures are
/// ignored: a missed entry is caught up with at the next multiple of `keep`.
pub fn prune(paths: &Paths, op: &OperationId, seq: u64, keep: u64) {
    if keep == 0 || seq <= keep {
        return;
    }
    let _ = fs::remove_file(paths.trail_entry(op, seq - keep));
    if !seq.is_multiple_of(keep) {
        return;
    }
    let Ok(entries) = fs::read_dir(paths.trail_dir(op)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let n = name.to_str().and_then(paths::trail_seq);
        if n.is_some_and(|n| n + keep <= seq) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
