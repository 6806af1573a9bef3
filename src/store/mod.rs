//! Where operations are kept: the [`Store`] trait and its backends.
//!
//! The store knows ledger data, logs and archives; it knows nothing about processes,
//! calls or heartbeats. All operation logic (sessions, fencing, crash handling) is written
//! once in `ledger/` against this trait, so the embedded file store, the HTTP client store
//! and the etcd store behave the same.
//!
//! Design notes:
//! - `modify` is the only way to change an operation. A backend either holds a lock around
//!   read-change-write (files) or retries the closure on a compare-and-swap conflict
//!   (etcd), which is why the change is `FnMut` and must have no side effects besides the
//!   data it is handed. An `Err` from the change aborts the write and is returned as is.
//! - The store bumps `seq` on every write; the trail of the file store is numbered by it.
//! - `read` is a consistent snapshot and may be served without any lock.
//! - `watch` pushes change notifications so abort and state changes need no polling.

pub mod file;

use std::fmt::Debug;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::OperationId;
use crate::model::LedgerData;

pub use file::{FileStore, FileStoreOptions};

/// The two logs of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// `{op}.operation.log`: one line per event, `{RFC3339 UTC} [LEVEL] message`.
    Main,
    /// `{op}.operation.debug.log`: written only by `debug_log`.
    Debug,
}

/// Where a store lives; exported to workers so nested tools join the same ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A ledger directory (`TOM_LEDGER_DIR`).
    Dir(PathBuf),
    /// A ledger server (`TOM_LEDGER_URL`).
    Url(String),
    /// etcd endpoints.
    Etcd(Vec<String>),
}

/// Who can have written a stored operation, where the backend can tell (the file store:
/// the operation file's owner and whether others may write it). Recovery acts on its own
/// only on operations whose record nobody else could have written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// User id owning the operation's record.
    pub owner_uid: u32,
    /// Whether the group or other users may write it.
    pub writable_by_others: bool,
}

/// A change to one operation, applied under the store's lock or CAS loop.
pub type Change<'a> = &'a mut (dyn FnMut(&mut LedgerData) -> Result<()> + Send);

/// Notifications that an operation changed: the value is a counter that moves on every
/// change seen (including the operation disappearing into the archive).
pub type ChangeReceiver = tokio::sync::watch::Receiver<u64>;

/// A ledger backend.
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// Where the store lives.
    fn location(&self) -> StoreLocation;

    /// Create a new operation; fails with `OperationExists` if the id is taken.
    async fn create(&self, data: &LedgerData) -> Result<()>;

    /// A consistent snapshot of a live operation; `OperationNotFound` if there is none.
    async fn read(&self, op: &OperationId) -> Result<LedgerData>;

    /// Read-change-write of a live operation. Returns the data as written.
    async fn modify(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData>;

    /// A change that only refreshes heartbeats: the same as [`modify`](Self::modify), but
    /// the backend keeps no history of it (the file store makes no trail entry).
    async fn refresh(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        self.modify(op, change).await
    }

    /// Ids of the live (not archived) operations, sorted.
    async fn list(&self) -> Result<Vec<OperationId>>;

    /// Ids of the archived operations, sorted.
    async fn list_archived(&self) -> Result<Vec<OperationId>>;

    /// The final data of an archived operation.
    async fn read_archived(&self, op: &OperationId) -> Result<LedgerData>;

    /// Append one line (without newline) to a log of the operation. Line breaks inside it
    /// are escaped (`\n`, `\r`), so one call is always one line. Appending to an archived
    /// operation goes to its archived log.
    async fn append_log(&self, op: &OperationId, kind: LogKind, line: &str) -> Result<()>;

    /// The log from byte `from` on (live or archived), and the offset to continue from.
    async fn read_log(&self, op: &OperationId, kind: LogKind, from: u64) -> Result<(String, u64)>;

    /// Move a finished operation, its logs and its trail into the archive and apply the
    /// retention limit. Returns a description of where it went.
    async fn archive(&self, op: &OperationId) -> Result<String>;

    /// Subscribe to changes of one operation.
    fn watch(&self, op: &OperationId) -> Result<ChangeReceiver>;

    /// Who can have written the operation's record; `None` when the backend cannot tell.
    async fn provenance(&self, op: &OperationId) -> Result<Option<Provenance>> {
        let _ = op;
        Ok(None)
    }

    /// Remove what creates that failed part-way left (no operation came of them), and
    /// return where it was; with `dry_run`, only find it. Backends whose creates are
    /// atomic leave nothing.
    async fn clean_failed_creates(&self, dry_run: bool) -> Result<Vec<PathBuf>> {
        let _ = dry_run;
        Ok(Vec::new())
    }
}
