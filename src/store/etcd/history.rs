//! What the etcd store keeps over time: the archive's retention, the cluster's history
//! (compaction) and, for inspection, who holds a presence key.

use std::sync::atomic::Ordering;

use etcd_client::{DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::{EtcdStore, Keys, TRIM_EVERY, logs};
use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::store::LogKind;

impl EtcdStore {
    /// Count `added` lines of this handle; every [`TRIM_EVERY`] of them, trim the log
    /// to its bound.
    pub(super) async fn trim_if_due(
        &self,
        op: &OperationId,
        kind: LogKind,
        added: usize,
    ) -> Result<()> {
        let added = u64::try_from(added).unwrap_or(u64::MAX);
        if added == 0 {
            return Ok(());
        }
        let before = self.inner.appends.fetch_add(added, Ordering::Relaxed);
        if before / TRIM_EVERY == (before + added) / TRIM_EVERY {
            return Ok(());
        }
        logs::trim(
            &self.inner.cluster,
            &self.inner.keys,
            op,
            kind,
            self.inner.options.log_max_lines,
        )
        .await
    }

    /// Compact the cluster's history up to `keep` revisions before the current one
    /// (for every ledger of the cluster: compaction is cluster-wide). Watches that were
    /// behind it resync.
    pub async fn compact_history(&self, keep: u64) -> Result<()> {
        let current = self.inner.seen.load(Ordering::Acquire);
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let at = current.saturating_sub(keep);
        if at <= self.inner.compacted.load(Ordering::Acquire) || at <= 0 {
            return Ok(());
        }
        let compacted = self
            .inner
            .cluster
            .run(|mut c| async move { c.compact(at, None).await })
            .await;
        match compacted {
            Ok(_) => {}
            // Compacted already, by another handle or the cluster itself.
            Err(Error::Invalid { reason, .. }) if reason.contains("compacted") => {}
            Err(e) => return Err(e),
        }
        self.inner.compacted.fetch_max(at, Ordering::AcqRel);
        Ok(())
    }

    /// Who holds a presence key in the operation now (lease-bound keys that presence
    /// puts; for inspection and tests), sorted.
    pub async fn present_participants(&self, op: &OperationId) -> Result<Vec<ParticipantId>> {
        let dir = self.inner.keys.presence(op);
        let kvs = self
            .get(
                dir.clone(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let mut ids: Vec<ParticipantId> = kvs
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(kv.key())
                    .ok()?
                    .strip_prefix(&dir)
                    .map(str::to_owned)
            })
            .filter_map(|name| ParticipantId::parse(name).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Delete the oldest archives beyond the retention limit, with their logs.
    pub(super) async fn enforce_retention(&self) -> Result<()> {
        let dir = self.inner.keys.archive_dir();
        let archived = self
            .get(
                dir.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Create, SortOrder::Ascend),
                ),
            )
            .await?;
        let excess = archived
            .len()
            .saturating_sub(self.inner.options.max_backups);
        let doomed: Vec<OperationId> = archived
            .iter()
            .take(excess)
            .filter_map(|kv| Keys::id_under(&dir, kv.key()))
            .collect();
        for batch in doomed.chunks(50) {
            let mut deletes = Vec::new();
            for op in batch {
                deletes.push(TxnOp::delete(self.inner.keys.archived(op), None));
                deletes.push(TxnOp::delete(
                    self.inner.keys.logs(op),
                    Some(DeleteOptions::new().with_prefix()),
                ));
            }
            self.txn(Txn::new().and_then(deletes)).await?;
        }
        Ok(())
    }

    /// Compact when the history since the last compaction is twice what is kept.
    pub(super) async fn compact_if_due(&self) -> Result<()> {
        let kept = self.inner.options.history_kept;
        if kept == 0 {
            return Ok(());
        }
        let since =
            self.inner.seen.load(Ordering::Acquire) - self.inner.compacted.load(Ordering::Acquire);
        if u64::try_from(since).unwrap_or(0) > kept.saturating_mul(2) {
            self.compact_history(kept).await?;
        }
        Ok(())
    }
}
