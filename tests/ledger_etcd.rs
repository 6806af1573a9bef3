//! The ledger behaviour suite on a real etcd member (one per test, under a key prefix of
//! its own).
#![cfg(feature = "etcd")]

mod common;
mod etcd_common;
mod ledger_suite;

use etcd_common::{Etcd, unique_prefix};
use ledger_suite::Backend;
use tom_dist_ledger::Connect;
use tom_dist_ledger::store::EtcdOptions;

struct EtcdBackend {
    etcd: Etcd,
    prefix: String,
}

impl EtcdBackend {
    fn new() -> Self {
        Self {
            etcd: Etcd::single(),
            prefix: unique_prefix("ledger"),
        }
    }
}

impl Backend for EtcdBackend {
    fn connect(&self, _participant: &str) -> Connect {
        Connect::etcd_with(
            self.etcd.endpoints(),
            EtcdOptions {
                prefix: self.prefix.clone(),
                ..EtcdOptions::default()
            },
        )
    }

    fn shared_location(&self) -> Option<(&'static str, String)> {
        Some(("TOM_LEDGER_ETCD", self.etcd.endpoint_list()))
    }

    fn proves_provenance(&self) -> bool {
        false
    }

    fn judges_by_participant_clock(&self) -> bool {
        false
    }
}

ledger_suite!(EtcdBackend::new());
