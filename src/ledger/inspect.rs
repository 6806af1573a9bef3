//! Reading an operation from outside it (the command's `status`, `log`, `trace`, and the
//! end of `run`): its live data, its log, the wait until it is archived. Through the
//! store's interface only, so any backend serves them.

use std::time::Duration;

use tokio::time::Instant;

use super::Ledger;
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;
use crate::store::{LogCursor, LogKind};

/// How often the wait for the archive looks again when no change came.
const ARCHIVE_POLL: Duration = Duration::from_millis(25);

impl Ledger {
    /// The live operation's data (`OperationNotFound` once it is archived or gone).
    pub async fn read_live(&self, op: &OperationId) -> Result<LedgerData> {
        self.inner.store.read(op).await
    }

    /// The operation's main log, whole, as it is now.
    pub async fn read_log(&self, op: &OperationId) -> Result<String> {
        let (text, _) = self
            .inner
            .store
            .read_log(op, LogKind::Main, LogCursor::START)
            .await?;
        Ok(text)
    }

    /// Wait, up to `bound`, until the operation has left the live ledger (archived or
    /// removed). False when the bound passes first, and at once when the operation cannot
    /// be read (corrupt, its directory unusable): nobody will archive it then.
    pub async fn wait_archived(&self, op: &OperationId, bound: Duration) -> bool {
        let store = &self.inner.store;
        let mut changes = store.watch(op).ok();
        let deadline = Instant::now() + bound;
        loop {
            match store.read(op).await {
                Ok(_) => {}
                Err(Error::OperationNotFound(_)) => return true,
                Err(_) => return false,
            }
            if Instant::now() >= deadline {
                return false;
            }
            match changes.as_mut() {
                Some(rx) => {
                    rx.next_within(ARCHIVE_POLL).await;
                }
                None => tokio::time::sleep(ARCHIVE_POLL).await,
            }
        }
    }
}
