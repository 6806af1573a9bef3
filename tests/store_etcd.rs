//! The `EtcdStore`: the behavioural store suite on a real etcd member, and what only this
//! backend has (prefixes sharing a cluster, resuming watches, lost replies, bad values).
#![cfg(feature = "etcd")]

#[macro_use]
mod store_suite;
mod etcd_common;

use std::sync::Arc;

use etcd_common::{Etcd, unique_prefix};
use store_suite::{TestLedger, sample};
use tom_dist_ledger::store::{EtcdOptions, EtcdStore, Store};

fn options(prefix: &str) -> EtcdOptions {
    EtcdOptions {
        prefix: prefix.to_string(),
        ..EtcdOptions::default()
    }
}

/// A handle on the ledger under `prefix`, from inside an async test.
async fn open(etcd: &Etcd, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&etcd.endpoints(), options(prefix))
        .await
        .expect("connect to the test etcd")
}

async fn etcd_ledger() -> TestLedger {
    let etcd = Etcd::single();
    let endpoints = etcd.endpoints();
    let prefix = unique_prefix("suite");
    // `TestLedger::open` is synchronous and called from the (multi-threaded) test
    // runtime: each handle connects in place.
    TestLedger::new(etcd, move || {
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(EtcdStore::connect(&endpoints, options(&prefix)))
        })
        .expect("connect to the test etcd");
        Arc::new(store) as Arc<dyn Store>
    })
}

mod suite {
    store_suite!(super::etcd_ledger);
}

/// Two ledgers with different prefixes share one cluster without seeing each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_ledgers_apart() {
    let etcd = Etcd::single();
    let a = open(&etcd, "/a/").await;
    let b = open(&etcd, "/b/").await;
    a.create(&sample("op_shared_name")).await.unwrap();
    assert!(b.list().await.unwrap().is_empty());
    b.create(&sample("op_shared_name")).await.unwrap();
    a.archive(&sample("op_shared_name").operation_id)
        .await
        .unwrap();
    assert_eq!(b.list().await.unwrap().len(), 1);
    assert!(b.list_archived().await.unwrap().is_empty());
}
