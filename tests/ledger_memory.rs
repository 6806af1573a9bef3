//! The ledger behaviour suite on the in-memory store, which implements only
//! compare-and-swap and makes every other swap conflict, so every change of the ledger
//! runs twice: the core needs nothing more, and its changes are pure. Behaviours that
//! need other processes to reach the ledger are listed as ignored, with that reason.

mod common;
mod ledger_suite;

use std::sync::Arc;

use ledger_suite::Backend;
use tom_dist_ledger::Connect;
use tom_dist_ledger::store::MemoryStore;

struct MemoryBackend {
    store: MemoryStore,
}

impl MemoryBackend {
    fn new() -> Self {
        Self {
            store: MemoryStore::rerunning_changes(),
        }
    }
}

impl Backend for MemoryBackend {
    fn connect(&self, _participant: &str) -> Connect {
        // Each participant holds its own handle, as each process holds its own store.
        Connect::store(Arc::new(self.store.handle()))
    }

    fn shared_location(&self) -> Option<(&'static str, String)> {
        None
    }
}

ledger_suite!(in_process: MemoryBackend::new());
