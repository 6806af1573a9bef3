//! The etcd store (feature `etcd`): one key per operation, written by compare-and-swap
//! on the key's `mod_revision`, logs as ordered keys, archiving as one transaction,
//! watches that resume after a reconnect or compaction, and a key prefix per ledger (see
//! `keys.rs` for the layout).
//!
//! Design notes:
//! - A [`Revision`] is the operation's `seq`, as on every backend (the store sets it to
//!   the previous one plus one). The transaction compares the key's `mod_revision`,
//!   which this handle remembers for each `seq` it read; a `seq` it has not seen is read
//!   first. On a refused compare the same round trip returns the current value, whose
//!   `seq` the conflict names.
//! - A read-change-write runs the change on the last value this handle saw and swaps
//!   against it, with the log lines that report the change in the same transaction: one
//!   round trip when nobody else wrote (`swap.rs`).
//! - Every request goes through the cluster's endpoint rotation (`cluster.rs`) and may
//!   be sent twice. So each write detects its own earlier success: a swap or create that
//!   finds its own bytes in place has been applied; a log line is a key of its own.
//! - Data read from etcd is input: a value that does not parse or names another
//!   operation is corrupt, and etcd cannot tell who wrote a key ([`Store::provenance`] is
//!   `None`), so automatic recovery never acts on an etcd ledger on its own.

mod cluster;
mod history;
mod keys;
mod known;
mod logs;
mod record;
mod swap;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::{
    ArchiveRef, Change, ChangeStream, ListEntry, LogCursor, LogKind, OperationSummary, Revision,
    Store, StoreLocation, Versioned, WriteKind,
};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;

pub use cluster::{Cluster, DEFAULT_DEADLINE, normalise_endpoint, parse_endpoints};
pub use keys::{DEFAULT_PREFIX, Keys};

/// Revisions remembered per operation (for concurrent writers in one handle).
const REMEMBERED: usize = 8;
/// A handle trims a log after this many of its own appends.
const TRIM_EVERY: u64 = 256;
/// Largest listing answer accepted (the client's default is 4 MiB).
const MAX_LISTING_BYTES: usize = 256 * 1024 * 1024;
/// Attempts of an archive whose operation keeps changing under it.
const ARCHIVE_ATTEMPTS: u32 = 50;

/// Settings of an etcd store.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Every key of the ledger starts with this (ends in `/`); ledgers with different
    /// prefixes share a cluster without seeing each other.
    pub prefix: String,
    /// Archived operations kept (the oldest beyond it are deleted with their logs).
    pub max_backups: usize,
    /// Lines kept per log.
    pub log_max_lines: u64,
    /// How long a request is retried over the live members before it fails as
    /// unavailable.
    pub deadline: Duration,
    /// Revisions of history kept: etcd keeps every old version until compacted (3.4
    /// compacts nothing by default and stops taking writes at its quota), so archiving
    /// compacts the history older than this many revisions. Watches that fall further
    /// behind get a resync. 0: never compact (the cluster's own auto-compaction does).
    pub history_kept: u64,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            max_backups: 20,
            log_max_lines: 100_000,
            deadline: DEFAULT_DEADLINE,
            history_kept: 100_000,
        }
    }
}

/// A ledger in etcd; see the module notes. A clone is the same handle.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    keys: Keys,
    options: EtcdOptions,
    /// `seq` -> `mod_revision` of the operations this handle read or wrote.
    revisions: Mutex<HashMap<OperationId, VecDeque<(u64, i64)>>>,
    /// The last value of each operation this handle saw, for one-round-trip changes.
    known: Arc<known::KnownValues>,
    /// The newest cluster revision this handle has seen (watches start after it).
    seen: AtomicI64,
    appends: AtomicU64,
    /// The revision this handle last compacted the history at.
    compacted: AtomicI64,
    watches: watch::Watches,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.cluster.endpoints())
            .field("prefix", &self.inner.keys.prefix())
            .finish()
    }
}

fn header_revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

/// The first key-value of the `index`th response of a transaction.
fn got(responses: &[TxnOpResponse], index: usize) -> Option<&KeyValue> {
    match responses.get(index)? {
        TxnOpResponse::Get(g) => g.kvs().first(),
        _ => None,
    }
}

impl EtcdStore {
    /// Connect to the cluster at `endpoints` (`host:port` or `http://host:port`); fails
    /// with [`Error::Unavailable`] when no member answers within the options' deadline.
    /// Must be called within a tokio runtime (watches run as its tasks).
    pub async fn connect(endpoints: &[String], options: EtcdOptions) -> Result<Self> {
        let cluster = Cluster::connect(endpoints, options.deadline).await?;
        Self::on(cluster, options).await
    }

    /// A store on an existing cluster connection (shared with presence).
    pub async fn on(cluster: Cluster, options: EtcdOptions) -> Result<Self> {
        let keys = Keys::new(&options.prefix)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::invalid("etcd store", format!("needs a tokio runtime: {e}")))?;
        let known = Arc::new(known::KnownValues::default());
        let store = Self {
            inner: Arc::new(Inner {
                watches: watch::Watches::new(cluster.clone(), runtime, known.clone()),
                known,
                cluster,
                keys,
                options,
                revisions: Mutex::default(),
                seen: AtomicI64::new(0),
                appends: AtomicU64::new(0),
                compacted: AtomicI64::new(0),
            }),
        };
        // One request now: an unreachable cluster is reported at connect, and watches
        // have a revision to start from.
        let prefix = store.inner.keys.prefix().to_string();
        let response = store
            .inner
            .cluster
            .run(|mut c| {
                let prefix = prefix.clone();
                async move {
                    c.get(
                        prefix,
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                    .await
                }
            })
            .await?;
        store.saw(response.header().map_or(0, |h| h.revision()));
        Ok(store)
    }

    /// The cluster connection (endpoints and rotation).
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The key layout of this ledger.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    fn saw(&self, revision: i64) {
        self.inner.seen.fetch_max(revision, Ordering::AcqRel);
    }

    fn remember(&self, op: &OperationId, seq: u64, mod_revision: i64) {
        let mut all = self
            .inner
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let known = all.entry(op.clone()).or_default();
        if !known.contains(&(seq, mod_revision)) {
            known.push_back((seq, mod_revision));
            if known.len() > REMEMBERED {
                known.pop_front();
            }
        }
    }

    fn forget(&self, op: &OperationId) {
        self.inner.known.forget(op);
        self.inner
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(op);
    }

    fn remembered(&self, op: &OperationId, seq: u64) -> Option<i64> {
        self.inner
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(op)?
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, m)| *m)
    }

    /// The `seq` this handle knows was written at `mod_revision`.
    fn seq_written_at(&self, op: &OperationId, mod_revision: i64) -> Option<u64> {
        self.inner
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(op)?
            .iter()
            .find(|(_, m)| *m == mod_revision)
            .map(|(s, _)| *s)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let response = self
            .inner
            .cluster
            .run(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        self.saw(header_revision(&response));
        Ok(response)
    }

    async fn get(&self, key: String, options: Option<GetOptions>) -> Result<Vec<KeyValue>> {
        let mut response = self
            .inner
            .cluster
            .run(|c| {
                let (key, options) = (key.clone(), options.clone());
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_LISTING_BYTES)
                        .get(key, options)
                        .await
                }
            })
            .await?;
        self.saw(response.header().map_or(0, |h| h.revision()));
        Ok(response.take_kvs())
    }

    /// Ids under a directory of the layout, sorted.
    async fn ids_under(&self, dir: String) -> Result<Vec<OperationId>> {
        let kvs = self
            .get(
                dir.clone(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let mut ids: Vec<OperationId> = kvs
            .iter()
            .filter_map(|kv| Keys::id_under(&dir, kv.key()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The live operation with its key's mod_revision.
    async fn read_live(&self, op: &OperationId) -> Result<(Versioned, i64)> {
        let key = self.inner.keys.live(op);
        let kvs = self.get(key.clone(), None).await?;
        let kv = kvs
            .first()
            .ok_or_else(|| Error::OperationNotFound(op.clone()))?;
        let data = record::decode(&key, op, kv.value())?;
        self.remember(op, data.seq, kv.mod_revision());
        self.inner
            .known
            .offer(op, known::Value::Data(data.clone()), kv.mod_revision());
        let revision = Revision::new(data.seq);
        Ok((Versioned { data, revision }, kv.mod_revision()))
    }

    fn summaries(&self, dir: &str, kvs: &[KeyValue], archived: bool) -> Vec<ListEntry> {
        let mut out: Vec<ListEntry> = kvs
            .iter()
            .filter_map(|kv| {
                let op = Keys::id_under(dir, kv.key())?;
                let key = format!("{dir}{op}");
                let summary = record::decode(&key, &op, kv.value())
                    .map(|data| OperationSummary::of(&data, archived));
                Some(ListEntry {
                    operation_id: op,
                    archived,
                    summary,
                })
            })
            .collect();
        out.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
        out
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn location(&self) -> StoreLocation {
        StoreLocation::Etcd {
            endpoints: self.inner.cluster.endpoints().to_vec(),
            prefix: self.inner.keys.prefix().to_string(),
        }
    }

    async fn create(&self, data: &LedgerData) -> Result<()> {
        let op = &data.operation_id;
        let (live, archived) = (self.inner.keys.live(op), self.inner.keys.archived(op));
        let value = record::encode(data);
        let txn = Txn::new()
            .when([
                Compare::create_revision(live.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(archived.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(live.as_str(), value.clone(), None)])
            .or_else([TxnOp::get(live.as_str(), None)]);
        let response = self.txn(txn).await?;
        let responses = response.op_responses();
        if response.succeeded() {
            let at = header_revision(&response);
            self.remember(op, data.seq, at);
            self.inner
                .known
                .offer(op, known::Value::Data(data.clone()), at);
            return Ok(());
        }
        match got(&responses, 0) {
            // A retried create that had been applied finds its own bytes.
            Some(kv)
                if kv.value() == value.as_slice() && kv.create_revision() == kv.mod_revision() =>
            {
                self.remember(op, data.seq, kv.mod_revision());
                Ok(())
            }
            _ => Err(Error::OperationExists(op.clone())),
        }
    }

    async fn read_versioned(&self, op: &OperationId) -> Result<Versioned> {
        Ok(self.read_live(op).await?.0)
    }

    /// The key's `mod_revision` without its value (a small request): the operation's
    /// revision when this handle knows which `seq` was written at it, `None` otherwise.
    async fn current_revision(&self, op: &OperationId) -> Result<Option<Revision>> {
        let key = self.inner.keys.live(op);
        let kvs = self
            .get(key, Some(GetOptions::new().with_keys_only()))
            .await?;
        let kv = kvs
            .first()
            .ok_or_else(|| Error::OperationNotFound(op.clone()))?;
        Ok(self
            .seq_written_at(op, kv.mod_revision())
            .map(Revision::new))
    }

    async fn compare_and_swap(
        &self,
        op: &OperationId,
        expected: Revision,
        mut data: LedgerData,
        _kind: WriteKind,
    ) -> Result<Versioned> {
        let mod_revision = match self.remembered(op, expected.get()) {
            Some(m) => m,
            None => {
                let (current, m) = self.read_live(op).await?;
                if current.revision != expected {
                    return Err(Error::Conflict {
                        operation: op.clone(),
                        expected,
                        found: current.revision,
                    });
                }
                m
            }
        };
        let revision = expected.next();
        data.operation_id = op.clone();
        data.seq = revision.get();
        let key = self.inner.keys.live(op);
        let value = record::encode(&data);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = self.txn(txn).await?;
        if response.succeeded() {
            let at = header_revision(&response);
            self.remember(op, revision.get(), at);
            self.inner
                .known
                .offer(op, known::Value::Data(data.clone()), at);
            return Ok(Versioned { data, revision });
        }
        let responses = response.op_responses();
        let Some(kv) = got(&responses, 0) else {
            self.forget(op);
            return Err(Error::OperationNotFound(op.clone()));
        };
        if kv.value() == value.as_slice() {
            // Applied by an attempt whose reply was lost.
            self.remember(op, revision.get(), kv.mod_revision());
            return Ok(Versioned { data, revision });
        }
        let found = record::decode(&key, op, kv.value())?;
        self.remember(op, found.seq, kv.mod_revision());
        Err(Error::Conflict {
            operation: op.clone(),
            expected,
            found: Revision::new(found.seq),
        })
    }

    async fn list(&self) -> Result<Vec<OperationId>> {
        self.ids_under(self.inner.keys.live_dir()).await
    }

    async fn list_archived(&self) -> Result<Vec<OperationId>> {
        self.ids_under(self.inner.keys.archive_dir()).await
    }

    async fn read_archived(&self, op: &OperationId) -> Result<LedgerData> {
        let key = self.inner.keys.archived(op);
        let kvs = self.get(key.clone(), None).await?;
        let kv = kvs
            .first()
            .ok_or_else(|| Error::OperationNotFound(op.clone()))?;
        record::decode(&key, op, kv.value())
    }

    /// Both directories in one transaction (one round trip).
    async fn list_summaries(&self) -> Result<Vec<ListEntry>> {
        let (live, archive) = (self.inner.keys.live_dir(), self.inner.keys.archive_dir());
        let txn = Txn::new().and_then([
            TxnOp::get(live.as_str(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(archive.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let response = self
            .inner
            .cluster
            .run(|c| {
                let txn = txn.clone();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_LISTING_BYTES)
                        .txn(txn)
                        .await
                }
            })
            .await?;
        self.saw(header_revision(&response));
        let responses = response.op_responses();
        let kvs = |i: usize| match responses.get(i) {
            Some(TxnOpResponse::Get(g)) => g.kvs().to_vec(),
            _ => Vec::new(),
        };
        let mut out = self.summaries(&live, &kvs(0), false);
        out.extend(self.summaries(&archive, &kvs(1), true));
        Ok(out)
    }

    /// One round trip when this handle's last value of the operation is current.
    async fn modify(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        self.swap_in(op, change, &[]).await
    }

    async fn refresh(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        self.swap_in(op, change, &[]).await
    }

    /// The change and its lines in one transaction (beyond [`LINES_WITH_CHANGE`] lines,
    /// the rest after it).
    async fn modify_logged(
        &self,
        op: &OperationId,
        change: Change<'_>,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        self.swap_in_logged(op, change, lines).await
    }

    async fn append_log(&self, op: &OperationId, kind: LogKind, line: &str) -> Result<()> {
        logs::append(&self.inner.cluster, &self.inner.keys, op, kind, line).await?;
        self.trim_if_due(op, kind, 1).await
    }

    async fn read_log(
        &self,
        op: &OperationId,
        kind: LogKind,
        from: LogCursor,
    ) -> Result<(String, LogCursor)> {
        logs::read(&self.inner.cluster, &self.inner.keys, op, kind, from).await
    }

    /// Put the archived copy and delete the live key in one transaction, on the
    /// condition that the live key is still the one read.
    async fn archive(&self, op: &OperationId) -> Result<ArchiveRef> {
        let (live, archived) = (self.inner.keys.live(op), self.inner.keys.archived(op));
        let mut seen = Vec::new();
        for _ in 0..ARCHIVE_ATTEMPTS {
            let kvs = self.get(live.clone(), None).await?;
            let Some(kv) = kvs.first() else {
                return Err(Error::OperationNotFound(op.clone()));
            };
            let value = kv.value().to_vec();
            seen.extend(record::seq_of(&value));
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    live.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([
                    TxnOp::put(archived.as_str(), value.clone(), None),
                    TxnOp::delete(live.as_str(), None),
                ])
                .or_else([TxnOp::get(archived.as_str(), None)]);
            let response = self.txn(txn).await?;
            let responses = response.op_responses();
            let done = response.succeeded()
                || got(&responses, 0).is_some_and(|a| a.value() == value.as_slice());
            if done {
                self.forget(op);
                self.enforce_retention().await?;
                self.compact_if_due().await?;
                return Ok(ArchiveRef::new(op.clone(), format!("etcd:{archived}")));
            }
        }
        // Every attempt lost to another writer: name the first and last revision seen.
        let first = seen.first().copied().unwrap_or_default();
        let last = seen.last().copied().unwrap_or_default();
        Err(Error::Conflict {
            operation: op.clone(),
            expected: Revision::new(first),
            found: Revision::new(last),
        })
    }

    fn watch(&self, op: &OperationId) -> Result<ChangeStream> {
        let seen = self.inner.seen.load(Ordering::Acquire);
        self.inner
            .watches
            .subscribe(op, self.inner.keys.live(op), seen)
    }
}
