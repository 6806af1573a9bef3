//! Logs in etcd: one key per line under the log's prefix, ordered by create revision,
//! with a bound on the lines kept.
//!
//! A line's key ends in a random id, so appends from many participants never contend;
//! an append that is retried after a lost reply writes the same key again, which keeps
//! its create revision (one line, not two). Lines written in one transaction (with the
//! change they report) share a create revision and are ordered by their keys (the random
//! id, then the line's number). A [`LogCursor`] is the create revision of the last line
//! read; a read takes all the lines of a revision or none of them. Logs stay where they are when the operation is archived, so a
//! reader goes on from its cursor into the archived log. Every so many appends, a handle
//! trims the oldest lines beyond the bound (readers from the start then begin later, as
//! after a rotation of the file store's log).

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp,
};

use super::cluster::Cluster;
use super::keys::Keys;
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::store::{LogCursor, LogKind};

/// Lines read per request.
const PAGE: i64 = 500;
/// Deletes per transaction when trimming (etcd allows 128 operations).
const TRIM_BATCH: usize = 100;
/// Most lines one transaction can hold (etcd allows 128 operations in one).
const TXN_LINES: u64 = 128;

/// The line as stored: line breaks inside it escaped, ending in one newline.
pub fn escape(line: &str) -> String {
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

/// Keys for `n` lines written in one transaction, in their order.
pub fn line_keys(keys: &Keys, op: &OperationId, kind: LogKind, n: usize) -> Vec<String> {
    let dir = keys.log(op, kind);
    let id = rand::random::<u64>();
    (0..n).map(|i| format!("{dir}{id:016x}{i:04x}")).collect()
}

/// Lines in log order: by create revision, then by key within one transaction.
fn in_log_order(kvs: &mut [KeyValue]) {
    kvs.sort_by(|a, b| (a.create_revision(), a.key()).cmp(&(b.create_revision(), b.key())));
}

/// Append one line to a log of a live or archived operation.
pub async fn append(
    cluster: &Cluster,
    keys: &Keys,
    op: &OperationId,
    kind: LogKind,
    line: &str,
) -> Result<()> {
    let key = line_keys(keys, op, kind, 1).remove(0);
    let value = escape(line);
    // Live: one round trip. Archived: a second one.
    for exists in [keys.live(op), keys.archived(op)] {
        let txn = Txn::new()
            .when([Compare::create_revision(
                exists.as_str(),
                CompareOp::Greater,
                0,
            )])
            .and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
        let done = cluster
            .run(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if done.succeeded() {
            return Ok(());
        }
    }
    Err(Error::OperationNotFound(op.clone()))
}

/// Whether the operation exists, live or archived (one round trip).
async fn exists(cluster: &Cluster, keys: &Keys, op: &OperationId) -> Result<bool> {
    let count = GetOptions::new().with_count_only();
    let txn = Txn::new().and_then([
        TxnOp::get(keys.live(op), Some(count.clone())),
        TxnOp::get(keys.archived(op), Some(count)),
    ]);
    let response = cluster
        .run(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    Ok(response.op_responses().iter().any(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g.count() > 0,
        _ => false,
    }))
}

/// The lines of a log after `from`, and the cursor to go on from.
pub async fn read(
    cluster: &Cluster,
    keys: &Keys,
    op: &OperationId,
    kind: LogKind,
    from: LogCursor,
) -> Result<(String, LogCursor)> {
    if !exists(cluster, keys, op).await? {
        return Err(Error::OperationNotFound(op.clone()));
    }
    let prefix = keys.log(op, kind);
    let mut text = String::new();
    // A cursor is input: one beyond any revision reads nothing and stays where it is.
    let mut last = i64::try_from(from.position()).unwrap_or(i64::MAX);
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_min_create_revision(last.saturating_add(1))
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(PAGE);
        let page = cluster
            .run(|mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.get(prefix, Some(options)).await }
            })
            .await?;
        let mut kvs = page.kvs().to_vec();
        in_log_order(&mut kvs);
        let more = page.more();
        if more && let Some(tail) = kvs.last().map(KeyValue::create_revision) {
            // The page may end inside one transaction's lines: read them next time.
            // (A transaction holds at most 128 lines, a page more.)
            if kvs.iter().any(|kv| kv.create_revision() != tail) {
                kvs.retain(|kv| kv.create_revision() != tail);
            }
        }
        for kv in &kvs {
            text.push_str(&String::from_utf8_lossy(kv.value()));
            last = last.max(kv.create_revision());
        }
        if !more || kvs.is_empty() {
            break;
        }
    }
    let cursor = u64::try_from(last).map_or(from, LogCursor::at);
    Ok((text, cursor))
}

/// Delete the oldest lines of a log beyond `max_lines`.
pub async fn trim(
    cluster: &Cluster,
    keys: &Keys,
    op: &OperationId,
    kind: LogKind,
    max_lines: u64,
) -> Result<()> {
    let prefix = keys.log(op, kind);
    let counted = cluster
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
    let count = u64::try_from(counted.count()).unwrap_or(0);
    let excess = count.saturating_sub(max_lines);
    if excess == 0 {
        return Ok(());
    }
    let oldest = cluster
        .run(|mut c| {
            let prefix = prefix.clone();
            // Past the excess by one transaction's lines: the oldest are chosen in
            // log order below, whatever order etcd gives within a revision.
            let limit = excess.saturating_add(TXN_LINES);
            let options = GetOptions::new()
                .with_prefix()
                .with_keys_only()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
            async move { c.get(prefix, Some(options)).await }
        })
        .await?;
    let mut oldest = oldest.kvs().to_vec();
    in_log_order(&mut oldest);
    let doomed: Vec<Vec<u8>> = oldest
        .iter()
        .take(usize::try_from(excess).unwrap_or(usize::MAX))
        .map(|kv| kv.key().to_vec())
        .collect();
    for batch in doomed.chunks(TRIM_BATCH) {
        let deletes: Vec<TxnOp> = batch
            .iter()
            .map(|k| TxnOp::delete(k.clone(), None::<DeleteOptions>))
            .collect();
        let txn = Txn::new().and_then(deletes);
        cluster
            .run(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
    }
    Ok(())
}
