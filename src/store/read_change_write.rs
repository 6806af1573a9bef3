//! Read-change-write built on compare-and-swap: the one loop every backend without a
//! cheaper way uses (the file store runs the change under its lock instead).
//!
//! Read the operation and its revision, apply the change to a copy, write it back if the
//! revision is still the one read; on a conflict, start again from a fresh read. The
//! change may therefore run more than once, which is why it must be pure. Attempts are
//! bounded: a writer that keeps losing reports the last conflict instead of spinning.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;

use super::{Change, Store, WriteKind};

/// Attempts before a read-change-write gives up with the last [`Error::Conflict`].
pub const MAX_ATTEMPTS: u32 = 200;

/// Apply `change` to the operation by compare-and-swap, retrying on conflict; returns
/// the data as written. An `Err` from the change aborts and is returned as is.
pub async fn read_change_write<S: Store + ?Sized>(
    store: &S,
    op: &OperationId,
    change: Change<'_>,
    kind: WriteKind,
) -> Result<LedgerData> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = store.read_versioned(op).await?;
        let mut data = current.data;
        change(&mut data)?;
        match store
            .compare_and_swap(op, current.revision, data, kind)
            .await
        {
            Ok(written) => return Ok(written.data),
            Err(e @ Error::Conflict { .. }) if attempt >= MAX_ATTEMPTS => return Err(e),
            Err(Error::Conflict { .. }) => back_off(attempt).await,
            Err(e) => return Err(e),
        }
    }
}

/// Let the writer that won finish: yield at first, then sleep a little longer each time
/// (up to 10 ms) so that many contenders spread out.
pub(crate) async fn back_off(attempt: u32) {
    if attempt < 4 {
        tokio::task::yield_now().await;
    } else {
        let most = u64::from(attempt.min(10));
        let ms = rand::random_range(0..=most);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
