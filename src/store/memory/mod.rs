//! An in-memory ledger for tests: it implements only compare-and-swap.
//!
//! There is no lock and no closure run under one: `modify` and `refresh` are the trait's
//! provided read-change-write loop over [`Store::compare_and_swap`], exactly as a remote
//! backend will run them. The behaviour suites run against it to prove that the ledger's
//! core needs nothing more than compare-and-swap.
//!
//! - Every handle from [`MemoryStore::handle`] is the same ledger, as another process's
//!   store would be (but no other process can reach it: its location is
//!   [`StoreLocation::Memory`]).
//! - [`MemoryStore::rerunning_changes`] makes every other swap fail with a conflict, as if
//!   another writer had come first, so every change runs twice: a change that is not pure
//!   (does I/O, counts its runs) shows.
//! - Watch streams carry the revision of every change; each handle has its own feed, as
//!   each process has its own watcher, and dropping the handle (all its clones) ends the
//!   streams it gave out.
//! - Provenance: only this process can have written a record, so it is this user's and
//!   nobody else's (automatic recovery may act on it).
//! - Logs are whole lines; a [`LogCursor`] counts bytes of the log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;

use super::{
    ArchiveRef, ChangeStream, LogCursor, LogKind, OperationChange, Provenance, Revision, Store,
    StoreLocation, Subscribers, Versioned, WriteKind,
};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;

/// One operation: its data (live or archived), and its two logs.
#[derive(Debug)]
struct Entry {
    data: LedgerData,
    archived: bool,
    main_log: String,
    debug_log: String,
}

impl Entry {
    fn log_mut(&mut self, kind: LogKind) -> &mut String {
        match kind {
            LogKind::Main => &mut self.main_log,
            LogKind::Debug => &mut self.debug_log,
        }
    }

    fn log(&self, kind: LogKind) -> &str {
        match kind {
            LogKind::Main => &self.main_log,
            LogKind::Debug => &self.debug_log,
        }
    }
}

/// The streams one handle gave out.
type Feed = Mutex<Subscribers<OperationId>>;

#[derive(Debug, Default)]
struct Ledger {
    entries: BTreeMap<OperationId, Entry>,
    /// The feed of every handle still alive.
    feeds: Vec<Weak<Feed>>,
}

#[derive(Debug, Default)]
struct Shared {
    ledger: Mutex<Ledger>,
    /// Swaps so far, when every other one is to conflict.
    rerun_counter: Option<AtomicU64>,
}

/// The in-memory test ledger; see the module notes. A clone is the same handle (it
/// shares the feed); [`handle`](Self::handle) is another one.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    feed: Arc<Feed>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_shared(Shared::default())
    }
}

impl MemoryStore {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty ledger on which every other compare-and-swap conflicts (nothing is written
    /// by the refused one), so read-change-write runs each change twice.
    pub fn rerunning_changes() -> Self {
        Self::with_shared(Shared {
            ledger: Mutex::default(),
            rerun_counter: Some(AtomicU64::new(0)),
        })
    }

    fn with_shared(shared: Shared) -> Self {
        Self::joining(Arc::new(shared))
    }

    fn joining(shared: Arc<Shared>) -> Self {
        let feed = Arc::new(Feed::default());
        {
            let mut ledger = shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
            ledger.feeds.retain(|f| f.strong_count() > 0);
            ledger.feeds.push(Arc::downgrade(&feed));
        }
        Self { shared, feed }
    }

    /// Another handle on the same ledger, with its own watch feed (as another process's
    /// store would be).
    pub fn handle(&self) -> Self {
        Self::joining(self.shared.clone())
    }

    /// End every watch stream of every handle, as a backend whose watcher restarted (a
    /// reconnect) would: watchers must notice and subscribe again.
    pub fn restart_watches(&self) {
        for feed in self.ledger().feeds.iter().filter_map(Weak::upgrade) {
            feed.lock().unwrap_or_else(|e| e.into_inner()).end_all();
        }
    }

    /// How many watch streams of `op` are open, over every handle.
    pub fn watch_count(&self, op: &OperationId) -> usize {
        self.ledger()
            .feeds
            .iter()
            .filter_map(Weak::upgrade)
            .map(|feed| feed.lock().unwrap_or_else(|e| e.into_inner()).count(op))
            .sum()
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.shared.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this swap is one that is made to conflict.
    fn forced_conflict(&self) -> bool {
        self.shared
            .rerun_counter
            .as_ref()
            .is_some_and(|n| n.fetch_add(1, Ordering::Relaxed) % 2 == 0)
    }
}

impl Ledger {
    fn live(&self, op: &OperationId) -> Result<&Entry> {
        self.entries
            .get(op)
            .filter(|e| !e.archived)
            .ok_or_else(|| Error::OperationNotFound(op.clone()))
    }

    fn live_mut(&mut self, op: &OperationId) -> Result<&mut Entry> {
        self.entries
            .get_mut(op)
            .filter(|e| !e.archived)
            .ok_or_else(|| Error::OperationNotFound(op.clone()))
    }

    /// Queue `change` on every handle's streams of `op`.
    fn publish(&mut self, op: &OperationId, change: OperationChange) {
        self.feeds.retain(|feed| match feed.upgrade() {
            Some(feed) => {
                feed.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .publish(op, change);
                true
            }
            None => false,
        });
    }

    fn ids(&self, archived: bool) -> Vec<OperationId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.archived == archived)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 1);
    for c in line.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

#[async_trait]
impl Store for MemoryStore {
    fn location(&self) -> StoreLocation {
        StoreLocation::Memory
    }

    async fn create(&self, data: &LedgerData) -> Result<()> {
        let mut ledger = self.ledger();
        let op = &data.operation_id;
        if ledger.entries.contains_key(op) {
            return Err(Error::OperationExists(op.clone()));
        }
        ledger.entries.insert(
            op.clone(),
            Entry {
                data: data.clone(),
                archived: false,
                main_log: String::new(),
                debug_log: String::new(),
            },
        );
        Ok(())
    }

    async fn read_versioned(&self, op: &OperationId) -> Result<Versioned> {
        let ledger = self.ledger();
        let data = ledger.live(op)?.data.clone();
        let revision = Revision::new(data.seq);
        Ok(Versioned { data, revision })
    }

    async fn current_revision(&self, op: &OperationId) -> Result<Option<Revision>> {
        Ok(Some(Revision::new(self.ledger().live(op)?.data.seq)))
    }

    async fn compare_and_swap(
        &self,
        op: &OperationId,
        expected: Revision,
        mut data: LedgerData,
        _kind: WriteKind,
    ) -> Result<Versioned> {
        let mut ledger = self.ledger();
        let entry = ledger.live_mut(op)?;
        let found = Revision::new(entry.data.seq);
        if found != expected || self.forced_conflict() {
            return Err(Error::Conflict {
                operation: op.clone(),
                expected,
                found,
            });
        }
        let revision = found.next();
        data.operation_id = op.clone();
        data.seq = revision.get();
        entry.data = data.clone();
        ledger.publish(op, OperationChange::changed(Some(revision)));
        Ok(Versioned { data, revision })
    }

    async fn list(&self) -> Result<Vec<OperationId>> {
        Ok(self.ledger().ids(false))
    }

    async fn list_archived(&self) -> Result<Vec<OperationId>> {
        Ok(self.ledger().ids(true))
    }

    async fn read_archived(&self, op: &OperationId) -> Result<LedgerData> {
        self.ledger()
            .entries
            .get(op)
            .filter(|e| e.archived)
            .map(|e| e.data.clone())
            .ok_or_else(|| Error::OperationNotFound(op.clone()))
    }

    async fn append_log(&self, op: &OperationId, kind: LogKind, line: &str) -> Result<()> {
        let mut ledger = self.ledger();
        let entry = ledger
            .entries
            .get_mut(op)
            .ok_or_else(|| Error::OperationNotFound(op.clone()))?;
        entry.log_mut(kind).push_str(&escape(line));
        Ok(())
    }

    async fn read_log(
        &self,
        op: &OperationId,
        kind: LogKind,
        from: LogCursor,
    ) -> Result<(String, LogCursor)> {
        let ledger = self.ledger();
        let log = ledger
            .entries
            .get(op)
            .ok_or_else(|| Error::OperationNotFound(op.clone()))?
            .log(kind);
        // A cursor from elsewhere is input: past the end or inside a character reads
        // nothing and stays where it is.
        let start = usize::try_from(from.position()).unwrap_or(usize::MAX);
        match log.get(start..) {
            Some(rest) => Ok((rest.to_string(), LogCursor::at(log.len() as u64))),
            None => Ok((String::new(), from)),
        }
    }

    async fn archive(&self, op: &OperationId) -> Result<ArchiveRef> {
        let mut ledger = self.ledger();
        let entry = ledger.live_mut(op)?;
        entry.archived = true;
        let revision = Revision::new(entry.data.seq);
        ledger.publish(op, OperationChange::archived(Some(revision)));
        Ok(ArchiveRef::new(op.clone(), format!("memory:{op}")))
    }

    /// Only this process can have written an in-memory record: it is this user's.
    async fn provenance(&self, op: &OperationId) -> Result<Option<Provenance>> {
        self.ledger().live(op)?;
        Ok(Some(Provenance {
            owner_uid: nix::unistd::geteuid().as_raw(),
            writable_by_others: false,
        }))
    }

    fn watch(&self, op: &OperationId) -> Result<ChangeStream> {
        Ok(self
            .feed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subscribe(op.clone()))
    }
}
