//! The per-operation writer lock: `flock` on `{op}.operation.json.lock`.
//!
//! The lock file is separate from the operation file because the operation file is
//! replaced by rename: a lock on it would be on an inode that is gone after the first
//! write. Archiving removes the lock file while holding it, so a process that was waiting
//! on it wakes up holding a lock on an orphan; after locking we therefore check that the
//! path still names the inode we hold, and start over if not.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;

use super::io::open_private;
use super::paths::Paths;
use super::trust::{Owner, open_entry};
use crate::error::{Error, Result};
use crate::ids::OperationId;

/// What to do when the operation has no lock file yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfMissing {
    /// Create it (creating the operation).
    Create,
    /// Create it only if the operation file exists (a ledger written by the original,
    /// which deleted its lock files); otherwise the operation is not found. This keeps
    /// calls on unknown operations from leaving lock files behind.
    RequireOperation,
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct OpLock {
    file: File,
}

impl OpLock {
    /// Take the lock of `op`, waiting as long as another writer holds it.
    pub fn acquire(paths: &Paths, op: &OperationId, missing: IfMissing) -> Result<Self> {
        let path = paths.lock(op);
        loop {
            let existing = open_entry(
                OpenOptions::new().read(true).write(true),
                &path,
                0,
                Owner::Me,
                "open lock file",
            );
            let file = match existing {
                Ok((file, _)) => file,
                Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                    if missing == IfMissing::RequireOperation && !paths.operation(op).exists() {
                        return Err(Error::OperationNotFound(op.clone()));
                    }
                    open_private(
                        OpenOptions::new().read(true).write(true).create(true),
                        &path,
                        "create lock file",
                    )?
                }
                Err(e) => return Err(e),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    blocking(|| wait_for_lock(&file)).map_err(|e| Error::io("lock", &path, e))?;
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
            let held = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Self { file });
                }
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", &path, e)),
            }
        }
    }

    /// Remove the lock file while holding it: only for an operation that is gone.
    pub fn remove(self, paths: &Paths, op: &OperationId) {
        let _ = fs::remove_file(paths.lock(op));
    }
}

impl Drop for OpLock {
    /// Unlocks explicitly rather than by closing: a process started by another thread
    /// while the lock was held keeps a copy of the descriptor until its `exec`, and with
    /// it the lock, so the next writer would wait for that `exec`.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// `flock`, going on waiting when a signal interrupts the wait.
fn wait_for_lock(file: &File) -> std::io::Result<()> {
    loop {
        match file.lock() {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Run a call that may block for a while (waiting for the lock) without starving the
/// runtime: on a multi-thread runtime the worker hands its other tasks away first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::io::tests::child_holding_descriptors;

    #[test]
    fn the_next_writer_does_not_wait_for_a_child_that_has_not_exec_d() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf());
        let op = OperationId::parse("op_lock").unwrap();
        let lock = OpLock::acquire(&paths, &op, IfMissing::Create).unwrap();
        let child = child_holding_descriptors(2000);
        drop(lock);
        let start = std::time::Instant::now();
        let again = OpLock::acquire(&paths, &op, IfMissing::Create).unwrap();
        let waited = start.elapsed();
        drop(again);
        child.join().unwrap();
        assert!(
            waited < std::time::Duration::from_secs(1),
            "waited {waited:?}"
        );
    }
}
