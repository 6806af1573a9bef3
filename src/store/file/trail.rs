//! The trail: `{op}_trail/{seq:08}_{op}.json` holds the operation file as it was before
//! modification `seq`, so a damaged ledger can be restored by hand. Entries are made by
//! the swap that puts each new version in place (see `replace.rs`).
//!
//! Names come from `seq`, which only the lock holder moves, so they never collide and
//! pruning needs no lock. A writer that died between staging and swapping leaves an entry
//! numbered above the operation's `seq`: the next writer of that `seq` replaces it, and
//! archiving drops it.

use std::fs;

use super::paths::{self, Paths};
use super::trust;
use crate::ids::OperationId;

/// Drop entries beyond `keep` after write `seq`. Runs outside the lock, and failures are
/// ignored: a missed entry is caught up with at the next multiple of `keep`.
pub fn prune(paths: &Paths, op: &OperationId, seq: u64, keep: u64) {
    if keep == 0 || seq <= keep {
        return;
    }
    let _ = fs::remove_file(paths.trail_entry(op, seq - keep));
    if seq.is_multiple_of(keep) {
        remove_entries(paths, op, |n| n + keep <= seq);
    }
}

/// Remove the trail entries whose `seq` matches `doomed`; nothing in a trail directory
/// that is a symlink or not this user's.
pub fn remove_entries(paths: &Paths, op: &OperationId, doomed: impl Fn(u64) -> bool) {
    if !trust::is_own_dir(&paths.trail_dir(op)) {
        return;
    }
    let Ok(entries) = fs::read_dir(paths.trail_dir(op)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .and_then(paths::trail_seq)
            .is_some_and(&doomed)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}
