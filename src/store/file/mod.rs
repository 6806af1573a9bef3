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
//!   the old inode lives on there. Pruning the oldest entry happens after the lock is
//!   released.
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
mod trail;
mod trust;
mod watch;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Change, ChangeReceiver, LogKind, Provenance, Store, StoreLocation};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;
use io::{create_private_dir_all, read_whole};
use lock::{IfMissing, OpLock};
use paths::Paths;

/// Settings of a [`FileStore`].
#[derive(Clone, Debug)]
pub struct FileStoreOptions {
    /// Trail snapshots kept per operation; 0 disables the trail.
    pub trail_keep: u64,
    /// Archived operations kept in `backup/`; 0 keeps none.
    pub max_backups: usize,
    /// fsync files and directories on every write.
    pub durable: bool,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self {
            trail_keep: 200,
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

    fn read_sync(&self, path: &Path, op: &OperationId) -> Result<LedgerData> {
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
        Ok(data)
    }

    fn modify_sync(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        let lock = OpLock::acquire(&self.paths, op, IfMissing::RequireOperation)?;
        let mut data = self.read_sync(&self.paths.operation(op), op)?;
        let seq = data.seq + 1;
        change(&mut data)?;
        data.operation_id = op.clone();
        data.seq = seq;
        let keep = self.options.trail_keep;
        let trail = (keep > 0).then_some(seq);
        // The entry the trail is about to drop becomes this write's staging file.
        let recycle = (keep > 0 && seq > keep).then(|| seq - keep);
        replace::swap_in(
            &self.paths,
            op,
            &data.to_json(),
            trail,
            recycle,
            self.options.durable,
        )?;
        drop(lock);
        trail::prune(&self.paths, op, seq, self.options.trail_keep);
        Ok(data)
    }

    fn create_sync(&self, data: &LedgerData) -> Result<()> {
        let op = &data.operation_id;
        let lock = OpLock::acquire(&self.paths, op, IfMissing::Create)?;
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
        self.create_sync(data)
    }

    async fn read(&self, op: &OperationId) -> Result<LedgerData> {
        self.read_sync(&self.paths.operation(op), op)
    }

    async fn modify(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        self.modify_sync(op, change)
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
        log::append(&self.paths, op, kind, line, self.options.durable)
    }

    async fn read_log(&self, op: &OperationId, kind: LogKind, from: u64) -> Result<(String, u64)> {
        log::read(&self.paths, op, kind, from)
    }

    async fn archive(&self, op: &OperationId) -> Result<String> {
        let dir = archive::archive(&self.paths, op, self.options.durable)?;
        archive::enforce_retention(&self.paths, self.options.max_backups)?;
        Ok(dir.display().to_string())
    }

    fn watch(&self, op: &OperationId) -> Result<ChangeReceiver> {
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
        leftovers::clean(&self.paths, dry_run)
    }
}
