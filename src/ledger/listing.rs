//! Listing every operation of a ledger, readable or not: one unreadable file (truncated,
//! hand-edited) must not hide the others, and is listed with its error.

use super::{Ledger, OperationSummary};
use crate::error::Result;
use crate::ids::OperationId;

/// One operation as listed: its summary, or why its file cannot be read.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedOperation {
    pub operation_id: OperationId,
    /// From the archive (`backup/`).
    pub archived: bool,
    pub summary: std::result::Result<OperationSummary, String>,
}

impl Ledger {
    /// Every operation, live then archived, each with its summary or its read error, in
    /// one listing of the store. Fails only when the ledger itself cannot be listed.
    pub async fn list_all_operations(&self) -> Result<Vec<ListedOperation>> {
        let entries = self.inner.store.list_summaries().await?;
        Ok(entries
            .into_iter()
            .map(|entry| ListedOperation {
                operation_id: entry.operation_id,
                archived: entry.archived,
                summary: entry.summary.map_err(|e| e.to_string()),
            })
            .collect())
    }

    /// The ids of the live operations, sorted, without reading any of them (nor the
    /// archive): for callers that read each one whole anyway (`status`).
    pub async fn list_live_operation_ids(&self) -> Result<Vec<OperationId>> {
        self.inner.store.list().await
    }
}
