//! Helpers of the crash and recovery tests: an initiator on a ledger directory, waits
//! with generous bounds, the operation log.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use tom_dist_ledger::ledger::{Connect, Ledger};
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::{LogKind, Store};
use tom_dist_ledger::{OperationId, ParticipantId};

pub async fn initiator(dir: &std::path::Path, tweak: impl FnOnce(Connect) -> Connect) -> Ledger {
    let connect = Connect::local(dir)
        .participant(ParticipantId::parse("cli").unwrap())
        .heartbeat_interval(Duration::from_secs(3600))
        .cleanup_wait(Duration::from_secs(5));
    Ledger::connect(tweak(connect)).await.unwrap()
}

pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_archived(store: &std::sync::Arc<dyn Store>, op: &OperationId) -> LedgerData {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.read_archived(op).await.is_err() {
        if Instant::now() > deadline {
            let data = store.read(op).await;
            panic!(
                "not archived after 30 s; ledger: {data:#?}\nlog:\n{}",
                log(store, op).await
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.read_archived(op).await.unwrap()
}

pub async fn log(store: &std::sync::Arc<dyn Store>, op: &OperationId) -> String {
    store
        .read_log(op, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
        .await
        .unwrap()
        .0
}
