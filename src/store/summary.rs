//! Listing with summaries: what `ls`, `status` and recovery need of every operation, in
//! one call, so a remote backend answers it in one round trip instead of one per
//! operation. An operation that cannot be read is listed with its error: one damaged
//! record must not hide the others.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, OperationState};
use crate::revision::Revision;

use super::Store;

/// The head of one operation.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationSummary {
    pub operation_id: OperationId,
    pub state: OperationState,
    pub aborted: bool,
    pub initiator_id: ParticipantId,
    pub description: Option<String>,
    pub start_time: Timestamp,
    pub participants: usize,
    pub call_frames: usize,
    pub temp_resources: usize,
    /// Archived (completed or failed and moved to the backup).
    pub archived: bool,
    /// The revision the summary was taken at.
    pub revision: Revision,
}

impl OperationSummary {
    /// The summary of `data` as stored.
    pub fn of(data: &LedgerData, archived: bool) -> Self {
        Self {
            operation_id: data.operation_id.clone(),
            state: data.operation_state,
            aborted: data.aborted,
            initiator_id: data.initiator_id.clone(),
            description: data.description.clone(),
            start_time: data.start_time,
            participants: data.participants.len(),
            call_frames: data.call_frames.len(),
            temp_resources: data.temp_resources.len(),
            archived,
            revision: Revision::new(data.seq),
        }
    }
}

/// One listed operation: its summary, or why it cannot be read.
#[derive(Debug)]
pub struct ListEntry {
    pub operation_id: OperationId,
    pub archived: bool,
    pub summary: Result<OperationSummary>,
}

/// Live operations, then archived ones, each sorted by id; an operation archived or
/// removed between the listing and its read is left out. The provided
/// [`Store::list_summaries`] for backends that have nothing better than a read each.
pub async fn list_by_reading<S: Store + ?Sized>(store: &S) -> Result<Vec<ListEntry>> {
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
                Err(Error::OperationNotFound(_)) => continue,
                Err(e) => Err(e),
            };
            out.push(ListEntry {
                operation_id: id,
                archived,
                summary,
            });
        }
    }
    Ok(out)
}
