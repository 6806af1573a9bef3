//! What a create that failed part-way leaves behind (a full disk, a process killed in the
//! middle): the staging file `.{op}.operation.json.tmp`, the empty logs and the lock file
//! of an operation whose file never came into place.
//!
//! What proves such a file is a leftover of this store, and safe to delete: its name is
//! one this store gives for a valid operation id; under that operation's lock (which a
//! create holds from its first file to its last) there is no operation file; it is a
//! regular file (never a symlink or a directory) owned by this user; and a log is empty,
//! so nothing is lost with it. Anything else is left where it is.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lock::{IfMissing, OpLock};
use super::paths::{OPERATION_SUFFIX, Paths};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::store::LogKind;

/// The leftovers of failed creates: removed (the paths removed), or with `dry_run` only
/// found (the paths that would be removed).
pub async fn clean(paths: &Paths, dry_run: bool, lock_timeout: Duration) -> Result<Vec<PathBuf>> {
    let base = paths.base();
    let mut ops: Vec<OperationId> = fs::read_dir(base)
        .map_err(|e| Error::io("list", base, e))?
        .flatten()
        .filter_map(|e| leftover_of(e.file_name().to_str()?))
        .collect();
    ops.sort();
    ops.dedup();
    let mut removed = Vec::new();
    for op in ops {
        if exists(&paths.operation(&op)) {
            continue;
        }
        let had_lock = exists(&paths.lock(&op));
        let candidates = [
            (paths.temp(&op), false),
            (paths.log(&op, LogKind::Main), true),
            (paths.log(&op, LogKind::Debug), true),
            (paths.lock(&op), true),
        ];
        if dry_run {
            let found = candidates.into_iter().filter(|(p, e)| is_ours(p, *e));
            removed.extend(found.map(|(p, _)| p));
            continue;
        }
        let lock = OpLock::acquire(paths, &op, IfMissing::Create, lock_timeout).await?;
        // A create finishing meanwhile put its file in place: nothing left over then.
        if exists(&paths.operation(&op)) {
            continue;
        }
        for (path, must_be_empty) in candidates.into_iter().take(3) {
            if !is_ours(&path, must_be_empty) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "leftover not removed")
                }
            }
        }
        // No operation: its lock file goes too, under the lock, as a failed create does.
        if had_lock && is_ours(&paths.lock(&op), true) {
            removed.push(paths.lock(&op));
        }
        lock.remove(paths, &op);
    }
    Ok(removed)
}

/// The operation a file name would be a leftover of, if the store gives such names.
fn leftover_of(name: &str) -> Option<OperationId> {
    let id = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(&format!("{OPERATION_SUFFIX}.tmp")))
        .or_else(|| name.strip_suffix(&format!("{OPERATION_SUFFIX}.lock")))
        .or_else(|| name.strip_suffix(".operation.debug.log"))
        .or_else(|| name.strip_suffix(".operation.log"))?;
    OperationId::parse(id).ok()
}

fn exists(path: &Path) -> bool {
    !matches!(fs::symlink_metadata(path), Err(e) if e.kind() == ErrorKind::NotFound)
}

/// A regular file (not followed through a symlink) owned by this user; empty if asked.
fn is_ours(path: &Path, must_be_empty: bool) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    meta.file_type().is_file()
        && meta.uid() == super::trust::my_uid()
        && (!must_be_empty || meta.len() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_store_gives_are_leftovers() {
        let op = "20260101T000000.000-run-1-abcdef01";
        for name in [
            format!(".{op}.operation.json.tmp"),
            format!("{op}.operation.log"),
            format!("{op}.operation.debug.log"),
            format!("{op}.operation.json.lock"),
        ] {
            assert_eq!(leftover_of(&name).map(|o| o.to_string()), Some(op.into()));
        }
        for name in [
            format!("{op}.operation.json"),
            format!("{op}.operation.json.tmp"),
            "..operation.log".to_string(),
            "notes.txt".to_string(),
        ] {
            assert_eq!(leftover_of(&name), None, "{name}");
        }
    }
}
