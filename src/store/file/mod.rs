//! The embedded ledger: a directory of files.
//!
//! ```text
//! {base}/{op}.operation.json        the operation (pretty JSON)
//! {base}/{op}.operation.json.lock   flock target; never renamed or deleted while the op lives
//! {base}/{op}.operation.log         `{RFC3339 UTC} [LEVEL] message` per line
//! {base}/{op}.operation.debug.log   written only by `debug_log`
//! {base}/{op}_trail/{seq:08}_{op}.json   the file as it was before modification `seq`
//! {base}/backup/{op}/               operation.json, operation.log, operation.debug.log, trail/
//! ```
//!
//! Design notes:
//! - Compare-and-swap checks `seq` (the revision) under the lock. `modify` does not need
//!   it: the change runs under the lock, one read and one write per change, which is the
//!   store's throughput; it is what the trait's read-change-write would do without the
//!   retries.
//! - Writers hold `flock` on the separate `.lock` file and replace the operation file by
//!   writing a staging file and swapping it in with one atomic rename (`RENAME_EXCHANGE`,
//!   see `replace.rs`). The locked file is never the replaced one (locking a file that
//!   gets replaced loses updates), and readers need no lock: they see the old or the new
//!   file, never half of one.
//! - A corrupt operation file is reported as [`Error::Corrupt`] and never overwritten: the
//!   change is applied only to data that parsed.
//! - The lock file is created with the operation and removed only by archiving, under the
//!   lock; lockers check after locking that they hold the file the path still names
//!   (see `lock.rs`). Calls on unknown operations leave no lock or log file behind.
//! - The trail costs no copy: the staging file is the next trail entry, so after the swap
//!   the old inode lives on there. It is bounded in entries and bytes; heartbeat-only
//!   writes (`refresh`) make no entry. Pruning happens after the lock is released.
//! - Lock waits are bounded (`lock_timeout`) and happen off the caller's thread.
//! - Logs are rotated to `{log}.1` past `log_max_bytes` (see `log.rs`).
//! - Log lines are appended with one `write` on an `O_APPEND` descriptor, outside the lock,
//!   so concurrent writers never interleave within a line.
//! - Files are created 0600 and directories 0700 whatever the umask.
//! - Nothing in the directory is trusted that the store could not have made (see
//!   `trust.rs`): the directory must be this user's and writable by no one else, files
//!   are opened without following symlinks, and archive retention prunes only archives
//!   the store wrote (see `archive.rs`).
//! - No fsync unless `durable`: the ledger guards against process crashes, not power loss.
//!   Without it a power cut may leave the newest operation file empty (the trail keeps the
//!   states before it); with `durable`, every written file and the directories whose
//!   entries changed are synced before the call returns.

mod archive;
mod io;
mod leftovers;
mod lock;
mod log;
mod paths;
mod replace;
mod revision;
mod trail;
mod trust;
mod waiter;
mod watch;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    ArchiveRef, Change, ChangeStream, LogCursor, LogKind, Provenance, Revision, Store,
    StoreLocation, Versioned, WriteKind,
};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;
use io::{create_private_dir_all, read_head, read_whole};
use lock::{IfMissing, OpLock};
use paths::Paths;

/// Settings of a [`FileStore`].
#[derive(Clone, Debug)]
pub struct FileStoreOptions {
    /// Trail snapshots kept per operation; 0 disables the trail.
    pub trail_keep: u64,
    /// Bytes the trail of one operation may hold (oldest entries go first); 0 for no
    /// byte bound. A version larger than this is not kept.
    pub trail_max_bytes: u64,
    /// Size past which a live log is rotated to `{log}.1` (replacing the one before); 0
    /// never rotates. A log then holds at most about twice this.
    pub log_max_bytes: u64,
    /// Longest wait for the operation's lock before a write fails with
    /// [`Error::LockTimeout`] (a holder that is stopped or hung).
    pub lock_timeout: Duration,
    /// Archived operations kept in `backup/`; 0 keeps none.
    pub max_backups: usize,
    /// fsync files and directories on every write.
    pub durable: bool,
}

/// Default of [`FileStoreOptions::trail_max_bytes`]: 8 MiB.
pub const DEFAULT_TRAIL_MAX_BYTES: u64 = 8 << 20;
/// Default of [`FileStoreOptions::log_max_bytes`]: 16 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 16 << 20;
/// Default of [`FileStoreOptions::lock_timeout`]: 10 s.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self {
            trail_keep: 200,
            trail_max_bytes: DEFAULT_TRAIL_MAX_BYTES,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            max_backups: 20,
            durable: false,
        }
    }
}

/// The embedded file ledger.
#[derive(Debug)]
pub struct FileStore {
    paths: Paths,
    options: FileStoreOptions,
    watcher: watch::DirWatcher,
}

impl FileStore {
    /// Open (creating if needed) a ledger directory. A directory of another user, or one
    /// that group or others can write, is refused, and so is a `backup` that is not a
    /// directory of this user (a symlink included): nothing is created in them.
    pub fn open(base: impl Into<PathBuf>, options: FileStoreOptions) -> Result<Self> {
        let base: PathBuf = base.into();
        let paths = Paths::new(base.clone());
        create_private_dir_all(&base)?;
        trust::check_ledger_dir(&base)?;
        trust::ensure_private_dir(&paths.backup_dir(), "archive directory")?;
        let watcher = watch::DirWatcher::new(base);
        Ok(Self {
            paths,
            options,
            watcher,
        })
    }

    /// Open a ledger directory that exists, creating nothing (`backup/` comes with the
    /// first archive): for readers (`ls`, `status`, `log`). The same trust checks as
    /// [`open`](Self::open), on what is there.
    pub fn open_existing(base: impl Into<PathBuf>, options: FileStoreOptions) -> Result<Self> {
        let base: PathBuf = base.into();
        let paths = Paths::new(base.clone());
        trust::check_ledger_dir(&base)?;
        if paths.backup_dir().symlink_metadata().is_ok() {
            trust::ensure_private_dir(&paths.backup_dir(), "archive directory")?;
        }
        let watcher = watch::DirWatcher::new(base);
        Ok(Self {
            paths,
            options,
            watcher,
        })
    }

    /// The ledger directory.
    pub fn base(&self) -> &Path {
        self.paths.base()
    }

    /// Path of an operation's file (for tools and tests).
    pub fn operation_path(&self, op: &OperationId) -> PathBuf {
        self.paths.operation(op)
    }

    /// Path of an operation's lock file.
    pub fn lock_path(&self, op: &OperationId) -> PathBuf {
        self.paths.lock(op)
    }

    /// Path of the temp file a writer fills before renaming it over the operation file.
    pub fn temp_path(&self, op: &OperationId) -> PathBuf {
        self.paths.temp(op)
    }

    /// Path of a live operation log.
    pub fn log_path(&self, op: &OperationId, kind: LogKind) -> PathBuf {
        self.paths.log(op, kind)
    }

    /// Path of an operation's trail directory.
    pub fn trail_dir(&self, op: &OperationId) -> PathBuf {
        self.paths.trail_dir(op)
    }

    /// Path of an operation's archive directory.
    pub fn archive_dir(&self, op: &OperationId) -> PathBuf {
        self.paths.archive_dir(op)
    }

    /// The cursor at byte `offset` of a log as a whole (rotated generations counted):
    /// what the file store's log cursors are, for tools and tests.
    pub fn log_cursor(&self, offset: u64) -> LogCursor {
        LogCursor::at(offset)
    }

    /// The byte offset in the whole log that a cursor of this store stands for.
    pub fn log_offset(&self, cursor: LogCursor) -> u64 {
        cursor.position()
    }

    fn read_sync(&self, path: &Path, op: &OperationId) -> Result<LedgerData> {
        self.read_with_len(path, op).map(|(data, _)| data)
    }

    /// The operation at `path` and the size of its file.
    fn read_with_len(&self, path: &Path, op: &OperationId) -> Result<(LedgerData, u64)> {
        let bytes = match read_whole(path) {
            Ok(bytes) => bytes,
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                return Err(Error::OperationNotFound(op.clone()));
            }
            Err(e) => return Err(e),
        };
        let data = LedgerData::from_json(&bytes).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if &data.operation_id != op {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!("holds operation `{}`", data.operation_id),
            });
        }
        Ok((data, bytes.len() as u64))
    }

    fn lock(&self, op: &OperationId, missing: IfMissing) -> impl Future<Output = Result<OpLock>> {
        OpLock::acquire(&self.paths, op, missing, self.options.lock_timeout)
    }

    /// Read-change-write under the lock; `record` says whether the replaced file goes
    /// into the trail (not for writes that only refresh heartbeats).
    async fn write(
        &self,
        op: &OperationId,
        change: Change<'_>,
        record: bool,
    ) -> Result<LedgerData> {
        let lock = self.lock(op, IfMissing::RequireOperation).await?;
        let (mut data, old_len) = self.read_with_len(&self.paths.operation(op), op)?;
        let seq = data.seq + 1;
        change(&mut data)?;
        data.operation_id = op.clone();
        data.seq = seq;
        let bounds = trail::Bounds {
            keep: self.options.trail_keep,
            max_bytes: self.options.trail_max_bytes,
        };
        let plan = trail::plan(&self.paths, op, &lock, seq, old_len, record, bounds);
        // The oldest entry that goes becomes this write's staging file.
        let recycle = plan.entry.and(plan.doomed.first().copied());
        // Serialised straight into the staging file: the text of a large operation is
        // never held whole (it was the largest part of a write on the writer's thread).
        let recycled = replace::swap_in(
            &self.paths,
            op,
            &|out| data.write_json(out),
            plan.entry,
            recycle,
            self.options.durable,
        )?;
        if let Some(state) = plan.state {
            lock.write_note(&state.encode());
        }
        drop(lock);
        // A recycled entry has moved: its old name is gone already.
        let moved = recycle.filter(|_| recycled);
        trail::prune(&self.paths, op, &plan, bounds.keep, moved);
        Ok(data)
    }

    /// Rotate a log that an append took over its bound (best effort: the lines are
    /// written whatever becomes of the rotation).
    async fn rotate_if_over(&self, op: &OperationId, kind: LogKind, size: Option<u64>) {
        let max = self.options.log_max_bytes;
        if let Some(size) = size
            && max > 0
            && size > max
        {
            // Rotation is housekeeping: the line is written whatever becomes of it.
            match self.lock(op, IfMissing::RequireOperation).await {
                Ok(lock) => {
                    if let Err(e) = log::rotate(&self.paths, op, kind, max, self.options.durable) {
                        tracing::debug!(operation = %op, error = %e, "log not rotated");
                    }
                    drop(lock);
                }
                Err(e) => tracing::debug!(operation = %op, error = %e, "log not rotated"),
            }
        }
    }

    async fn create_locked(&self, data: &LedgerData) -> Result<()> {
        let op = &data.operation_id;
        let lock = self.lock(op, IfMissing::Create).await?;
        if trust::present(&self.paths.operation(op)) {
            return Err(Error::OperationExists(op.clone()));
        }
        let result = if trust::present(&self.paths.archive_dir(op)) {
            Err(Error::OperationExists(op.clone()))
        } else {
            [LogKind::Main, LogKind::Debug]
                .into_iter()
                .try_for_each(|kind| log::create(&self.paths.log(op, kind)))
                .and_then(|()| {
                    replace::create(&self.paths, op, &data.to_json(), self.options.durable)
                })
        };
        if result.is_err() && !trust::present(&self.paths.operation(op)) {
            // No operation came of it: leave no lock file behind.
            lock.remove(&self.paths, op);
        }
        result
    }

    fn list_sync(&self) -> Result<Vec<OperationId>> {
        let base = self.paths.base();
        let mut ids: Vec<OperationId> = fs::read_dir(base)
            .map_err(|e| Error::io("list", base, e))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_suffix(paths::OPERATION_SUFFIX)?;
                OperationId::parse(id).ok()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[async_trait]
impl Store for FileStore {
    fn location(&self) -> StoreLocation {
        StoreLocation::Dir(self.paths.base().to_path_buf())
    }

    async fn create(&self, data: &LedgerData) -> Result<()> {
        self.create_locked(data).await
    }

    async fn read_versioned(&self, op: &OperationId) -> Result<Versioned> {
        let data = self.read_sync(&self.paths.operation(op), op)?;
        let revision = Revision::new(data.seq);
        Ok(Versioned { data, revision })
    }

    async fn read(&self, op: &OperationId) -> Result<LedgerData> {
        self.read_sync(&self.paths.operation(op), op)
    }

    /// From the head of the file, where this store writes `seq` right after the id; `None`
    /// for a file that does not have it there (written by another tool).
    async fn current_revision(&self, op: &OperationId) -> Result<Option<Revision>> {
        match read_head(&self.paths.operation(op), revision::HEAD_BYTES) {
            Ok(head) => Ok(revision::seq_in_head(&head).map(Revision::new)),
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                Err(Error::OperationNotFound(op.clone()))
            }
            Err(e) => Err(e),
        }
    }

    async fn compare_and_swap(
        &self,
        op: &OperationId,
        expected: Revision,
        data: LedgerData,
        kind: WriteKind,
    ) -> Result<Versioned> {
        let mut data = Some(data);
        let mut swap = |current: &mut LedgerData| {
            let found = Revision::new(current.seq);
            if found != expected {
                return Err(Error::Conflict {
                    operation: op.clone(),
                    expected,
                    found,
                });
            }
            if let Some(new) = data.take() {
                *current = new;
            }
            Ok(())
        };
        let written = self.write(op, &mut swap, kind == WriteKind::Change).await?;
        let revision = Revision::new(written.seq);
        Ok(Versioned {
            data: written,
            revision,
        })
    }

    async fn modify(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        self.write(op, change, true).await
    }

    async fn refresh(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        self.write(op, change, false).await
    }

    async fn list(&self) -> Result<Vec<OperationId>> {
        self.list_sync()
    }

    async fn list_archived(&self) -> Result<Vec<OperationId>> {
        archive::list(&self.paths)
    }

    async fn read_archived(&self, op: &OperationId) -> Result<LedgerData> {
        trust::check_dir_if_present(&self.paths.archive_dir(op), "archive directory")?;
        self.read_sync(&self.paths.archived_operation(op), op)
    }

    async fn append_log(&self, op: &OperationId, kind: LogKind, line: &str) -> Result<()> {
        let size = log::append(&self.paths, op, kind, line, self.options.durable)?;
        self.rotate_if_over(op, kind, size).await;
        Ok(())
    }

    /// The change, then its lines in one append.
    async fn modify_logged(
        &self,
        op: &OperationId,
        change: Change<'_>,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        let written = self.write(op, change, true).await?;
        if lines.is_empty() {
            return Ok((written, Ok(())));
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let durable = self.options.durable;
        let logged = match log::append_lines(&self.paths, op, LogKind::Main, &lines, durable) {
            Ok(size) => {
                self.rotate_if_over(op, LogKind::Main, size).await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        Ok((written, logged))
    }

    async fn read_log(
        &self,
        op: &OperationId,
        kind: LogKind,
        from: LogCursor,
    ) -> Result<(String, LogCursor)> {
        let (text, next) = log::read(&self.paths, op, kind, from.position())?;
        Ok((text, LogCursor::at(next)))
    }

    async fn archive(&self, op: &OperationId) -> Result<ArchiveRef> {
        let lock = self.lock(op, IfMissing::RequireOperation).await?;
        let dir = archive::archive(&self.paths, op, lock, self.options.durable)?;
        archive::enforce_retention(&self.paths, self.options.max_backups)?;
        Ok(ArchiveRef::new(op.clone(), dir.display().to_string()))
    }

    fn watch(&self, op: &OperationId) -> Result<ChangeStream> {
        self.watcher.subscribe(paths::operation_file_name(op))
    }

    /// The operation file's owner and mode, read without following a symlink.
    async fn provenance(&self, op: &OperationId) -> Result<Option<Provenance>> {
        use std::os::unix::fs::MetadataExt;
        let path = self.paths.operation(op);
        match fs::symlink_metadata(&path) {
            Ok(meta) => Ok(Some(Provenance {
                owner_uid: meta.uid(),
                writable_by_others: meta.mode() & 0o022 != 0 || !meta.file_type().is_file(),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::OperationNotFound(op.clone())),
            Err(e) => Err(Error::io("inspect", &path, e)),
        }
    }

    async fn clean_failed_creates(&self, dry_run: bool) -> Result<Vec<PathBuf>> {
        leftovers::clean(&self.paths, dry_run, self.options.lock_timeout).await
    }
}
