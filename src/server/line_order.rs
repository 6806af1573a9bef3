//! One logged write at a time per operation: a write that carries log lines holds its
//! operation's turn from the compare-and-swap until its lines are appended, so the lines
//! in the log stay in the order of the writes they describe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::ids::OperationId;

/// The turns of the operations that logged writes were made to.
#[derive(Debug, Default)]
pub struct LineOrder {
    turns: Mutex<HashMap<OperationId, Arc<tokio::sync::Mutex<()>>>>,
}

impl LineOrder {
    /// Wait for `op`'s turn; it ends when the guard is dropped.
    pub async fn turn(&self, op: &OperationId) -> OwnedMutexGuard<()> {
        let turn = self
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op.clone())
            .or_default()
            .clone();
        turn.lock_owned().await
    }

    /// Drop an archived operation's turn.
    pub fn forget(&self, op: &OperationId) {
        self.turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(op);
    }
}
