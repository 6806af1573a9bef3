//! Listing every operation of a ledger, readable or not: one unreadable file (truncated,
//! hand-edited) must not hide the others, and is listed with its error.

use super::{Ledger, OperationSummary};
use crate::error::{Error, Result};
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
    /// Every operation, live then archived, each with its summary or its read error.
    /// Fails only when the ledger itself cannot be listed.
    pub async fn list_all_operations(&self) -> Result<Vec<ListedOperation>> {
        let store = &self.inner.store;
        let mut out = Vec::new();
        for (archived, ids) in [
            (false, store.list().await?),
            (true, store.list_archived().await?),
        ] {
            for id in ids {
                let read = if archived {
                    store.read_archived(&id).await
                } else {
                    store.read(&id).await
                };
                let summary = match read {
                    Ok(data) => Ok(OperationSummary::of(&data, archived)),
                    // Archived or gone between the listing and the read.
                    Err(Error::OperationNotFound(_)) => continue,
                    Err(e) => Err(e.to_string()),
                };
                out.push(ListedOperation {
                    operation_id: id,
                    archived,
                    summary,
                });
            }
        }
        Ok(out)
    }
}
