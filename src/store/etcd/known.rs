//! The last value of each operation this handle has seen (its own writes, its reads,
//! its watches' events), with the key's `mod_revision`: what a read-change-write swaps
//! against, so that the common case (nobody wrote since) costs one round trip.
//!
//! Never trusted as current: a swap against it fails when the key moved on, and the
//! refused swap brings the current value (see `swap.rs`). A value only replaces a newer
//! one never; the number of operations kept is bounded.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::OperationId;
use crate::model::LedgerData;

/// Operations remembered per handle (a handle works on few at a time).
const KEPT: usize = 64;

/// An operation's value as last seen.
#[derive(Clone)]
pub enum Value {
    /// Written or read by this handle.
    Data(LedgerData),
    /// From a watch event: decoded only when a change needs it.
    Raw(Vec<u8>),
}

/// A value and the `mod_revision` of the key that held it.
#[derive(Clone)]
pub struct Known {
    pub value: Value,
    pub mod_revision: i64,
}

#[derive(Default)]
pub struct KnownValues {
    values: Mutex<HashMap<OperationId, (Known, u64)>>,
    uses: std::sync::atomic::AtomicU64,
}

impl KnownValues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OperationId, (Known, u64)>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tick(&self) -> u64 {
        self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The last value seen of `op`.
    pub fn get(&self, op: &OperationId) -> Option<Known> {
        let tick = self.tick();
        let mut values = self.lock();
        let (known, used) = values.get_mut(op)?;
        *used = tick;
        Some(known.clone())
    }

    /// The `seq` of the value known at `mod_revision`, when this handle has it parsed
    /// (it wrote or read that value itself).
    pub fn seq_at(&self, op: &OperationId, mod_revision: i64) -> Option<u64> {
        let values = self.lock();
        let (known, _) = values.get(op)?;
        match &known.value {
            Value::Data(data) if known.mod_revision == mod_revision => Some(data.seq),
            _ => None,
        }
    }

    /// Take in a value of `op` from a watch event, unless this one or a newer one is
    /// known (the bytes are copied only when taken). Only of an operation already known.
    pub fn offer_raw(&self, op: &OperationId, value: &[u8], mod_revision: i64) {
        let tick = self.tick();
        let mut values = self.lock();
        if let Some((known, used)) = values.get_mut(op)
            && known.mod_revision < mod_revision
        {
            *known = Known {
                value: Value::Raw(value.to_vec()),
                mod_revision,
            };
            *used = tick;
        }
    }

    /// Take in a value of `op`, unless a newer one is known.
    pub fn offer(&self, op: &OperationId, value: Value, mod_revision: i64) {
        let tick = self.tick();
        let mut values = self.lock();
        if let Some((known, used)) = values.get_mut(op) {
            if known.mod_revision < mod_revision {
                *known = Known {
                    value,
                    mod_revision,
                };
            }
            *used = tick;
            return;
        }
        if values.len() >= KEPT
            && let Some(oldest) = values
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone())
        {
            values.remove(&oldest);
        }
        values.insert(
            op.clone(),
            (
                Known {
                    value,
                    mod_revision,
                },
                tick,
            ),
        );
    }

    /// Forget `op` (deleted, archived, or found missing).
    pub fn forget(&self, op: &OperationId) {
        self.lock().remove(op);
    }
}
