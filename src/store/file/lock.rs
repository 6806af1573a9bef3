//! The per-operation writer lock: `flock` on `{op}.operation.json.lock`.
//!
//! The lock file is separate from the operation file because the operation file is
//! replaced by rename: a lock on it would be on an inode that is gone after the first
//! write. Archiving removes the lock file while holding it, so a process that was waiting
//! on it wakes up holding a lock on an orphan; after locking we therefore check that the
//! path still names the inode we hold, and start over if not.
//!
//! Waiting is bounded and never blocks the caller's thread: the lock is tried at once and
//! for a moment (yielding between tries), and when another writer still holds it a waiter
//! thread (see `waiter.rs`) blocks in `flock` for us while the caller awaits the
//! hand-over with a deadline. A participant stopped while it
//! holds the lock therefore freezes nobody: the others fail their write after the bound,
//! with the holder's pid (from `/proc/locks`), and keep handling signals meanwhile.
//!
//! The lock file also carries a small note of the holder's bookkeeping (the trail's size,
//! see `trail.rs`), read and written only under the lock.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::io::open_private;
use super::paths::Paths;
use super::trust::{Owner, open_entry};
use super::waiter;
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
    /// Take the lock of `op`, waiting at most `bound` while another writer holds it.
    pub async fn acquire(
        paths: &Paths,
        op: &OperationId,
        missing: IfMissing,
        bound: Duration,
    ) -> Result<Self> {
        let path = paths.lock(op);
        let deadline = Instant::now() + bound;
        loop {
            // The identity of the file held comes from the open's own `fstat`.
            let (file, held) = open_lock_file(paths, op, missing, &path)?;
            let lock = match try_briefly(&file).await {
                Ok(true) => OpLock { file },
                Ok(false) => wait(file, held, &path, deadline, bound).await?,
                Err(e) => return Err(Error::io("lock", &path, e)),
            };
            match fs::symlink_metadata(&path) {
                Ok(now) if (now.dev(), now.ino()) == held => return Ok(lock),
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

    /// The note left in the lock file by the last holder (empty if none).
    pub fn read_note(&self) -> Vec<u8> {
        let mut buf = vec![0; NOTE_MAX];
        let n = self.file.read_at(&mut buf, 0).unwrap_or(0);
        buf.truncate(n);
        buf
    }

    /// Leave a note for the next holder. Notes have a fixed length, so one write replaces
    /// the last one whole; a failed write only costs the next holder a recount.
    pub fn write_note(&self, note: &[u8]) {
        debug_assert!(note.len() <= NOTE_MAX);
        let _ = self.file.write_all_at(note, 0);
    }
}

/// Longest note a lock file carries.
const NOTE_MAX: usize = 256;

impl Drop for OpLock {
    /// Unlocks explicitly rather than by closing: a process started by another thread
    /// while the lock was held keeps a copy of the descriptor until its `exec`, and with
    /// it the lock, so the next writer would wait for that `exec`.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The lock file, opened without following a symlink, and its device and inode.
fn open_lock_file(
    paths: &Paths,
    op: &OperationId,
    missing: IfMissing,
    path: &Path,
) -> Result<(File, (u64, u64))> {
    let existing = open_entry(
        OpenOptions::new().read(true).write(true),
        path,
        0,
        Owner::Me,
        "open lock file",
    );
    match existing {
        Ok((file, meta)) => Ok((file, (meta.dev(), meta.ino()))),
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            if missing == IfMissing::RequireOperation && !paths.operation(op).exists() {
                return Err(Error::OperationNotFound(op.clone()));
            }
            let file = open_private(
                OpenOptions::new().read(true).write(true).create(true),
                path,
                "create lock file",
            )?;
            let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
            Ok((file, (meta.dev(), meta.ino())))
        }
        Err(e) => Err(e),
    }
}

/// How long a writer keeps trying for the lock itself before it hands the wait to a waiter
/// thread. Most holders release it within a write or two; taking it on this thread then
/// saves a hand-over, which on a loaded machine can cost more than the write (the lock
/// would sit idle until this thread is scheduled again).
const TRY_FOR: Duration = Duration::from_millis(2);

/// Try for the lock for up to [`TRY_FOR`], giving the CPU away between tries (to the
/// holder, say) and letting the caller's runtime run its other tasks.
async fn try_briefly(file: &File) -> std::io::Result<bool> {
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if start.elapsed() < TRY_FOR => {
                std::thread::yield_now();
                tokio::task::yield_now().await;
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Wait for the lock in a waiter thread until `deadline`. A lock the waiter gets after we
/// gave up is released by it at once.
async fn wait(
    file: File,
    id: (u64, u64),
    path: &Path,
    deadline: Instant,
    bound: Duration,
) -> Result<OpLock> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    waiter::submit(Box::new(move || {
        let result = wait_for_lock(&file).map(|()| OpLock { file });
        // Nobody waits any more: the returned lock is dropped, which releases it.
        let _ = tx.send(result);
    }));
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(result)) => result.map_err(|e| Error::io("lock", path, e)),
        Ok(Err(_)) => Err(Error::io(
            "lock",
            path,
            std::io::Error::other("the lock waiter ended without an answer"),
        )),
        Err(_) => Err(Error::LockTimeout {
            path: path.to_path_buf(),
            after: bound,
            holder: lock_holder(id.0, id.1),
        }),
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

/// The pid holding a `flock` on the file `dev`/`ino`, from `/proc/locks` (for error
/// messages only: it is never signalled).
fn lock_holder(dev: u64, ino: u64) -> Option<i32> {
    let locks = fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, dev, ino)
}

/// The holder in a `/proc/locks` text: lines like
/// `1: FLOCK  ADVISORY  WRITE 4242 08:01:131 0 EOF` (device in hex); waiters (`->`) skipped.
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<i32> {
    let exact = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let ino_suffix = format!(":{ino}");
    let mut by_ino = Vec::new();
    for line in locks.lines().filter(|l| !l.contains("->")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            continue;
        }
        let (Some(pid), Some(file)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if *file == exact {
            return Some(pid);
        }
        // Stacked file systems may show another device number: an inode match is
        // enough when it is the only one.
        if file.ends_with(&ino_suffix) {
            by_ino.push(pid);
        }
    }
    (by_ino.len() == 1).then(|| by_ino[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::io::tests::child_holding_descriptors;

    const BOUND: Duration = Duration::from_secs(30);

    #[tokio::test(flavor = "current_thread")]
    async fn the_next_writer_does_not_wait_for_a_child_that_has_not_exec_d() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf());
        let op = OperationId::parse("op_lock").unwrap();
        let lock = OpLock::acquire(&paths, &op, IfMissing::Create, BOUND)
            .await
            .unwrap();
        let child = child_holding_descriptors(2000);
        drop(lock);
        let start = Instant::now();
        let again = OpLock::acquire(&paths, &op, IfMissing::Create, BOUND)
            .await
            .unwrap();
        let waited = start.elapsed();
        drop(again);
        child.join().unwrap();
        assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    }

    /// On a current-thread runtime, other tasks keep running while a lock is waited for,
    /// and the wait ends with an error naming the holder once the bound has passed.
    #[tokio::test(flavor = "current_thread")]
    async fn a_held_lock_is_waited_for_without_blocking_the_runtime_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().to_path_buf());
        let op = OperationId::parse("op_held").unwrap();
        let held = OpLock::acquire(&paths, &op, IfMissing::Create, BOUND)
            .await
            .unwrap();
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        // Another task notes whether it ever runs while the wait is in progress.
        let (waiting, seen) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let ticker = tokio::spawn({
            let (waiting, seen) = (waiting.clone(), seen.clone());
            async move {
                loop {
                    if waiting.load(Ordering::SeqCst) {
                        seen.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        let bound = Duration::from_millis(500);
        waiting.store(true, Ordering::SeqCst);
        let err = OpLock::acquire(&paths, &op, IfMissing::Create, bound)
            .await
            .unwrap_err();
        waiting.store(false, Ordering::SeqCst);
        ticker.abort();
        let message = err.to_string();
        assert!(
            matches!(err, Error::LockTimeout { holder: Some(pid), .. } if pid == std::process::id() as i32),
            "{message}"
        );
        assert!(
            message.contains(&format!("held by pid {}", std::process::id())),
            "{message}"
        );
        assert!(
            seen.load(Ordering::SeqCst),
            "the runtime was blocked while the lock was waited for"
        );
        // The abandoned waiter releases the lock it gets once the holder lets go.
        drop(held);
        let again = OpLock::acquire(&paths, &op, IfMissing::Create, BOUND)
            .await
            .unwrap();
        drop(again);
    }

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let dev = libc::makedev(8, 1);
        let text = "1: FLOCK  ADVISORY  WRITE 4242 08:01:131 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 4343 08:01:131 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 08:01:132 0 EOF\n";
        assert_eq!(holder_in(text, dev, 131), Some(4242));
        assert_eq!(holder_in(text, dev, 132), None);
        assert_eq!(holder_in(text, libc::makedev(0, 0x2d), 131), Some(4242));
        assert_eq!(holder_in("", dev, 131), None);
    }
}
