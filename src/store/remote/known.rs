//! The newest version of each operation a client store has seen (answers to its own
//! reads and writes, documents pushed on event streams), so a change starts from it
//! instead of reading first: the write is still a compare-and-swap on its revision, so a
//! version that is behind costs a refused write (whose answer carries the current one),
//! never a lost update.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::OperationId;
use crate::store::Versioned;

/// The last version seen of each operation.
#[derive(Debug, Default)]
pub struct Known {
    map: Mutex<HashMap<OperationId, Versioned>>,
}

impl Known {
    /// Keep `seen` unless a newer version is kept already.
    pub fn offer(&self, seen: &Versioned) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&seen.data.operation_id) {
            Some(kept) if kept.revision >= seen.revision => {}
            Some(kept) => *kept = seen.clone(),
            None => {
                map.insert(seen.data.operation_id.clone(), seen.clone());
            }
        }
    }

    /// The newest version seen of `op`.
    pub fn get(&self, op: &OperationId) -> Option<Versioned> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(op)
            .cloned()
    }

    /// Forget `op` (archived or gone).
    pub fn forget(&self, op: &OperationId) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(op);
    }
}
