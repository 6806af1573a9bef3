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

/// A call started and ended through an etcd ledger writes two transactions: each holds
/// the frame change and its log line together, in order.
#[tokio::test(flavor = "current_thread")]
async fn a_call_start_and_end_are_one_transaction_each() {
    use std::sync::Arc;
    use std::time::Duration;
    use tom_dist_ledger::ParticipantId;
    use tom_dist_ledger::ledger::{CallOptions, Ledger, OperationOptions};
    use tom_dist_ledger::store::{EtcdStore, LogCursor, LogKind, Store};

    let etcd = Etcd::single();
    let store = EtcdStore::connect(
        &etcd.endpoints(),
        EtcdOptions {
            prefix: unique_prefix("call-cost"),
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap();
    let ledger = Ledger::connect(
        Connect::store(Arc::new(store.clone()))
            .participant(ParticipantId::parse("caller").unwrap())
            .heartbeat_interval(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    // No beat in between (on this one thread, a stopped beat never runs again).
    op.stop_heartbeat();
    op.heartbeat().await.unwrap();
    // Every write transaction moves the cluster's revision by one; reads do not.
    let revision = || async {
        let mut client = store.cluster().client();
        let answer = client.get("/", None).await.unwrap();
        answer.header().unwrap().revision()
    };
    const CALLS: i64 = 5;
    let before = revision().await;
    for _ in 0..CALLS {
        let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
        call.end(()).await.unwrap();
    }
    assert_eq!(revision().await - before, 2 * CALLS);
    let (log, _) = store
        .read_log(op.operation_id(), LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    let events: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|e| e.starts_with("CALL_"))
        .collect();
    let expected: Vec<&str> = (0..CALLS)
        .flat_map(|_| ["CALL_STARTED", "CALL_ENDED"])
        .collect();
    assert_eq!(events, expected);
    op.complete().await.unwrap();
    ledger.dispose().await;
}
