//! Where operations are kept: the [`Store`] trait and its backends.
//!
//! The store knows ledger data, logs and archives; it knows nothing about processes,
//! calls or heartbeats. All operation logic (sessions, fencing, crash handling) is written
//! once in `ledger/` against this trait, so the embedded file store, the HTTP client store
//! and the etcd store behave the same.
//!
//! Design notes:
//! - The write primitive is compare-and-swap on a [`Revision`]: [`Store::read_versioned`]
//!   gives the data and its revision, [`Store::compare_and_swap`] replaces it only if the
//!   revision is still that one and fails with [`Error::Conflict`](crate::Error::Conflict)
//!   otherwise. File: `seq` checked under the lock; a server: `If-Match`; etcd:
//!   `mod_revision`. The store sets the written data's `seq` to the new revision.
//! - Read-change-write ([`Store::modify`], [`Store::refresh`]) is built on it in one place
//!   (`read_change_write.rs`): read, apply the change to a copy, swap, retry on conflict
//!   with a bound. A backend may do better (the file store runs the change under its
//!   lock, one read and one write per change), never differently.
//! - Change closures are pure: no I/O, no effects besides the data they are handed, and
//!   they may run more than once (once per conflict). What a change needs from outside
//!   (the time, whether a process lives) is found before and captured. An `Err` from the
//!   change aborts the write and is returned as is. The memory store can make every other
//!   swap conflict so the test suites run each change twice.
//! - `read` is a consistent snapshot and may be served without any lock.
//! - `watch` gives a [`ChangeStream`] of changes with revisions, a resync after a gap and a
//!   reported end (see `changes.rs`), so abort and state changes need no polling.
//! - `list_summaries` lists every operation with its head in one call (a remote backend:
//!   one round trip); an unreadable one is an entry with its error.
//! - Backends hand out typed references, not their internals: [`ArchiveRef`] for where an
//!   operation was archived, [`LogCursor`] for a place in a log.
//! - [`Error::Unavailable`](crate::Error::Unavailable) is for a backend that cannot be
//!   reached; the file store never returns it.

mod changes;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod file;
pub mod memory;
mod read_change_write;
mod refs;
pub mod remote;
mod summary;

use std::fmt::Debug;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::OperationId;
use crate::model::{FrameChange, LedgerData};

pub use crate::revision::Revision;
pub(crate) use changes::Subscribers;
pub use changes::{ChangeKind, ChangeStream, OperationChange, QUEUE_BOUND};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStore};
pub use file::{FileStore, FileStoreOptions};
pub use memory::MemoryStore;
pub use read_change_write::{MAX_ATTEMPTS, read_change_write};
pub use refs::{ArchiveRef, LogCursor};
pub use summary::{ListEntry, OperationSummary, list_by_reading};

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
    /// An etcd cluster (`TOM_LEDGER_ETCD`) and the ledger's key prefix
    /// (`TOM_LEDGER_ETCD_PREFIX`).
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// A store inside this process (tests): other processes cannot join it.
    Memory,
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

/// A change to one operation: pure, and run again after a conflict (see the notes).
pub type Change<'a> = &'a mut (dyn FnMut(&mut LedgerData) -> Result<()> + Send);

/// An operation as stored, and the revision it is at.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    pub data: LedgerData,
    pub revision: Revision,
}

/// Whether a write is kept in the operation's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A change of the operation (the file store makes a trail entry).
    Change,
    /// A write that only refreshes heartbeats: no history is kept of it.
    Refresh,
}

/// A ledger backend.
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// Where the store lives.
    fn location(&self) -> StoreLocation;

    /// Create a new operation; fails with `OperationExists` if the id is taken (live or
    /// archived).
    async fn create(&self, data: &LedgerData) -> Result<()>;

    /// A consistent snapshot of a live operation and its revision; `OperationNotFound`
    /// if there is none.
    async fn read_versioned(&self, op: &OperationId) -> Result<Versioned>;

    /// A consistent snapshot of a live operation.
    async fn read(&self, op: &OperationId) -> Result<LedgerData> {
        Ok(self.read_versioned(op).await?.data)
    }

    /// The revision a live operation is at now, where the backend can tell it without
    /// reading the whole operation (the file store: from the head of the file); `None`
    /// when it cannot (the caller reads the operation instead); `OperationNotFound` if
    /// there is none. For callers that hold a view and only need to know whether it is
    /// still current.
    async fn current_revision(&self, op: &OperationId) -> Result<Option<Revision>> {
        let _ = op;
        Ok(None)
    }

    /// Replace the live operation with `data` if it is still at revision `expected`;
    /// [`Error::Conflict`](crate::Error::Conflict) (nothing written) if another write came
    /// first. The written data keeps the operation's id and gets the new revision as `seq`.
    async fn compare_and_swap(
        &self,
        op: &OperationId,
        expected: Revision,
        data: LedgerData,
        kind: WriteKind,
    ) -> Result<Versioned>;

    /// Read-change-write of a live operation; returns the data as written. The change is
    /// pure and may run more than once.
    async fn modify(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        read_change_write(self, op, change, WriteKind::Change).await
    }

    /// [`modify`](Self::modify) that also appends `lines` (in order, without newlines) to
    /// the operation's main log once the change is written; when the change fails, none
    /// of them is written. Returns the data as written and whether the lines were
    /// appended. By default the lines are appended after the write (an append that fails
    /// does not undo the change); a backend may write them in the same transaction as the
    /// change (etcd: one round trip for both).
    async fn modify_logged(
        &self,
        op: &OperationId,
        change: Change<'_>,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        let written = self.modify(op, change).await?;
        Ok((written, append_each(self, op, lines).await))
    }

    /// A participant's change of its own call frames with its log lines:
    /// [`modify_logged`](Self::modify_logged) of `change`, which is `frame` applied (the
    /// ledger builds both from one description, so they cannot differ). A backend that
    /// can apply the description itself under its own lock (a ledger server) sends
    /// `frame` instead of a whole document, so that writers of one operation never
    /// refuse each other; its answer and errors are the ones `change` gives.
    async fn modify_frame(
        &self,
        op: &OperationId,
        frame: &FrameChange,
        change: Change<'_>,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        let _ = frame;
        self.modify_logged(op, change, lines).await
    }

    /// A change that only refreshes heartbeats: the same as [`modify`](Self::modify), but
    /// the backend keeps no history of it (the file store makes no trail entry).
    async fn refresh(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        read_change_write(self, op, change, WriteKind::Refresh).await
    }

    /// Ids of the live (not archived) operations, sorted.
    async fn list(&self) -> Result<Vec<OperationId>>;

    /// Ids of the archived operations, sorted.
    async fn list_archived(&self) -> Result<Vec<OperationId>>;

    /// The final data of an archived operation.
    async fn read_archived(&self, op: &OperationId) -> Result<LedgerData>;

    /// Every operation with its summary, live ones first, each part sorted by id; an
    /// unreadable one is listed with its error. Fails only when the ledger itself cannot
    /// be listed.
    async fn list_summaries(&self) -> Result<Vec<ListEntry>> {
        list_by_reading(self).await
    }

    /// Append one line (without newline) to a log of the operation. Line breaks inside it
    /// are escaped (`\n`, `\r`), so one call is always one line. Appending to an archived
    /// operation goes to its archived log.
    async fn append_log(&self, op: &OperationId, kind: LogKind, line: &str) -> Result<()>;

    /// The whole lines of a log (live or archived) after `from`, and the cursor to go on
    /// from.
    async fn read_log(
        &self,
        op: &OperationId,
        kind: LogKind,
        from: LogCursor,
    ) -> Result<(String, LogCursor)>;

    /// Move a finished operation, its logs and its history into the archive and apply the
    /// retention limit.
    async fn archive(&self, op: &OperationId) -> Result<ArchiveRef>;

    /// A stream of the operation's changes from now on.
    fn watch(&self, op: &OperationId) -> Result<ChangeStream>;

    /// The newest version of a live operation this store has been told of without asking
    /// its backend (a remote store: its own reads and writes, documents pushed with
    /// changes); it may be behind the operation as it is. `None` when the store keeps
    /// none. For a watcher that learned of a change up to some revision: a version at or
    /// past it is what a read would have told it.
    fn latest_seen(&self, op: &OperationId) -> Option<Versioned> {
        let _ = op;
        None
    }

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

/// Append `lines` to the operation's main log one by one, after the change they report
/// was written: every line is tried, and the last failure is what is returned.
pub(crate) async fn append_each<S: Store + ?Sized>(
    store: &S,
    op: &OperationId,
    lines: &[String],
) -> Result<()> {
    let mut logged = Ok(());
    for line in lines {
        if let Err(e) = store.append_log(op, LogKind::Main, line).await {
            logged = Err(e);
        }
    }
    logged
}
