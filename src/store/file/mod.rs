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
//!   writing a temp file and renaming it over. The locked file is never the renamed one
//!   (locking a file that gets replaced loses updates), and readers need no lock because
//!   rename is atomic: a reader sees the old or the new file, never half of one.
//! - The trail costs no copy: before the rename, the current file is hard-linked into the
//!   trail under the next `seq`, so the old inode lives on there. Pruning the oldest entry
//!   happens after the lock is released.
//! - Log lines are appended with one `write` on an `O_APPEND` descriptor, outside the lock,
//!   so concurrent writers never interleave within a line.
//! - No fsync unless `durable`: the ledger guards against process crashes, not power loss.

mod paths;
mod watch;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Change, ChangeReceiver, LogKind, Store, StoreLocation};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;
use paths::Paths;

/// Settings of a [`FileStore`].
#[derive(Clone, Debug)]
pub struct FileStoreOptions {
    /// Trail snapshots kept per operation; 0 disables the trail.
    pub trail_keep: u64,
    /// Archived operations kept in `backup/`.
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
    /// Open (creating if needed) a ledger directory.
    pub fn open(base: impl Into<PathBuf>, options: FileStoreOptions) -> Result<Self> {
        let base: PathBuf = base.into();
        let paths = Paths::new(base.clone());
        create_dir(&base)?;
        create_dir(&paths.backup_dir())?;
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

    /// Path of an operation's trail directory.
    pub fn trail_dir(&self, op: &OperationId) -> PathBuf {
        self.paths.trail_dir(op)
    }

    /// Path of an operation's archive directory.
    pub fn archive_dir(&self, op: &OperationId) -> PathBuf {
        self.paths.archive_dir(op)
    }

    fn lock(&self, op: &OperationId) -> Result<File> {
        let path = self.paths.lock(op);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        blocking(|| file.lock()).map_err(|e| Error::io("lock", &path, e))?;
        Ok(file)
    }

    fn read_sync(&self, path: &Path, op: &OperationId) -> Result<LedgerData> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::OperationNotFound(op.clone()));
            }
            Err(e) => return Err(Error::io("read", path, e)),
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

    /// Write `data` to the operation file by temp file and rename; the caller holds the lock.
    /// With `trail_seq`, the current file is first linked into the trail under that number.
    fn replace(&self, data: &LedgerData, trail_seq: Option<u64>) -> Result<()> {
        let op = &data.operation_id;
        let target = self.paths.operation(op);
        let tmp = self.paths.temp(op);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(&data.to_json())
            .map_err(|e| Error::io("write", &tmp, e))?;
        if self.options.durable {
            file.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        }
        drop(file);
        if let Some(seq) = trail_seq {
            self.link_into_trail(op, &target, seq)?;
        }
        fs::rename(&tmp, &target).map_err(|e| Error::io("rename into place", &target, e))?;
        if self.options.durable {
            sync_dir(self.paths.base())?;
        }
        Ok(())
    }

    fn link_into_trail(&self, op: &OperationId, current: &Path, seq: u64) -> Result<()> {
        let entry = self.paths.trail_entry(op, seq);
        match fs::hard_link(current, &entry) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_dir(&self.paths.trail_dir(op))?;
                fs::hard_link(current, &entry).map_err(|e| Error::io("link trail entry", &entry, e))
            }
            // Left by a writer that died between link and rename: that snapshot is stale.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                fs::remove_file(&entry).map_err(|e| Error::io("replace trail entry", &entry, e))?;
                fs::hard_link(current, &entry).map_err(|e| Error::io("link trail entry", &entry, e))
            }
            Err(e) => Err(Error::io("link trail entry", &entry, e)),
        }
    }

    /// Drop trail entries beyond the limit. Runs outside the lock: names never repeat.
    fn prune_trail(&self, op: &OperationId, seq: u64) {
        let keep = self.options.trail_keep;
        if keep == 0 || seq <= keep {
            return;
        }
        let _ = fs::remove_file(self.paths.trail_entry(op, seq - keep));
        // Catch up on entries a crashed writer did not prune, now and then.
        if seq.is_multiple_of(keep) {
            let Ok(entries) = fs::read_dir(self.paths.trail_dir(op)) else {
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
    }

    fn modify_sync(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        let lock = self.lock(op)?;
        let path = self.paths.operation(op);
        let before = self.read_sync(&path, op)?;
        let mut data = before.clone();
        change(&mut data)?;
        data.operation_id = before.operation_id.clone();
        data.seq = before.seq + 1;
        let trail = (self.options.trail_keep > 0).then_some(data.seq);
        self.replace(&data, trail)?;
        drop(lock);
        self.prune_trail(op, data.seq);
        Ok(data)
    }

    fn create_sync(&self, data: &LedgerData) -> Result<()> {
        let op = &data.operation_id;
        let _lock = self.lock(op)?;
        if self.paths.operation(op).exists() {
            return Err(Error::OperationExists(op.clone()));
        }
        if self.paths.archive_dir(op).exists() {
            return Err(Error::OperationExists(op.clone()));
        }
        for log in [self.paths.log(op, LogKind::Main), self.paths.log(op, LogKind::Debug)] {
            open_append(&log)?;
        }
        self.replace(data, None)
    }

    fn archive_sync(&self, op: &OperationId) -> Result<String> {
        let lock = self.lock(op)?;
        let current = self.paths.operation(op);
        if !current.exists() {
            return Err(Error::OperationNotFound(op.clone()));
        }
        let dir = self.paths.archive_dir(op);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| Error::io("remove old archive", &dir, e))?;
        }
        create_dir(&dir)?;
        let moves = [
            (self.paths.log(op, LogKind::Main), dir.join("operation.log")),
            (self.paths.log(op, LogKind::Debug), dir.join("operation.debug.log")),
            (self.paths.trail_dir(op), dir.join("trail")),
            (current, dir.join("operation.json")),
        ];
        for (from, to) in moves {
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("move into archive", &from, e)),
            }
        }
        if self.options.durable {
            sync_dir(&dir)?;
            sync_dir(self.paths.base())?;
        }
        // The operation is gone; its lock file goes with it while we still hold it.
        let _ = fs::remove_file(self.paths.lock(op));
        let _ = fs::remove_file(self.paths.temp(op));
        drop(lock);
        self.enforce_retention()?;
        Ok(dir.display().to_string())
    }

    /// Keep the newest `max_backups` archives (by archive time, then name).
    fn enforce_retention(&self) -> Result<()> {
        let backup = self.paths.backup_dir();
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&backup)
            .map_err(|e| Error::io("list", &backup, e))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        if dirs.len() <= self.options.max_backups {
            return Ok(());
        }
        dirs.sort();
        let excess = dirs.len() - self.options.max_backups;
        for (_, dir) in dirs.into_iter().take(excess) {
            let _ = fs::remove_dir_all(&dir);
        }
        Ok(())
    }

    fn list_sync(&self) -> Result<Vec<OperationId>> {
        let base = self.paths.base();
        let mut ids: Vec<OperationId> = fs::read_dir(base)
            .map_err(|e| Error::io("list", base, e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_suffix(paths::OPERATION_SUFFIX)?;
                OperationId::parse(id).ok()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn list_archived_sync(&self) -> Result<Vec<OperationId>> {
        let backup = self.paths.backup_dir();
        let mut ids: Vec<OperationId> = fs::read_dir(&backup)
            .map_err(|e| Error::io("list", &backup, e))?
            .flatten()
            .filter(|e| e.path().join("operation.json").is_file())
            .filter_map(|e| OperationId::parse(e.file_name().to_str()?).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn read_log_sync(&self, op: &OperationId, kind: LogKind, from: u64) -> Result<(String, u64)> {
        let live = self.paths.log(op, kind);
        let archived = self.paths.archived_log(op, kind);
        let mut file = match File::open(&live) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => match File::open(&archived) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(Error::OperationNotFound(op.clone()));
                }
                Err(e) => return Err(Error::io("open", &archived, e)),
            },
            Err(e) => return Err(Error::io("open", &live, e)),
        };
        file.seek(SeekFrom::Start(from))
            .map_err(|e| Error::io("seek", &live, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", &live, e))?;
        // Hand out whole lines only; a line being appended right now comes next time.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(whole);
        let next = from + whole as u64;
        Ok((String::from_utf8_lossy(&bytes).into_owned(), next))
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
        self.list_archived_sync()
    }

    async fn read_archived(&self, op: &OperationId) -> Result<LedgerData> {
        self.read_sync(&self.paths.archive_dir(op).join("operation.json"), op)
    }

    async fn append_log(&self, op: &OperationId, kind: LogKind, line: &str) -> Result<()> {
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        // Logs exist from `create` on; a line that comes after archiving goes to the archive
        // instead of leaving a stray log file behind.
        let live = self.paths.log(op, kind);
        let (path, mut file) = match open_existing_append(&live) {
            Ok(f) => (live, f),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let archived = self.paths.archived_log(op, kind);
                match open_existing_append(&archived) {
                    Ok(f) => (archived, f),
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Err(Error::OperationNotFound(op.clone()));
                    }
                    Err(e) => return Err(Error::io("open", archived, e)),
                }
            }
            Err(e) => return Err(Error::io("open", live, e)),
        };
        file.write_all(buf.as_bytes())
            .map_err(|e| Error::io("append to", &path, e))
    }

    async fn read_log(&self, op: &OperationId, kind: LogKind, from: u64) -> Result<(String, u64)> {
        self.read_log_sync(op, kind, from)
    }

    async fn archive(&self, op: &OperationId) -> Result<String> {
        self.archive_sync(op)
    }

    fn watch(&self, op: &OperationId) -> Result<ChangeReceiver> {
        self.watcher
            .subscribe(paths::operation_file_name(op), self.paths.operation(op))
    }
}

fn create_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

fn open_existing_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", path, e))
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
