//! The ledger across real processes: abort pushed to a peer process.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::peer::Peer;
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{Connect, Ledger, OperationOptions};

async fn initiator(dir: &std::path::Path) -> Ledger {
    Ledger::connect(
        Connect::local(dir)
            .participant(ParticipantId::parse("cli").unwrap())
            .heartbeat_interval(Duration::from_secs(3600)),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_set_by_one_process_reaches_another_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = initiator(dir.path()).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let mut peer = Peer::start("wait-abort", dir.path(), op.operation_id(), "peer", &[]);
    assert_eq!(peer.line().await, "ready");
    let sent = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    op.set_abort_flag(true).await.unwrap();
    let answer = peer.line().await;
    let seen: u128 = answer
        .strip_prefix("aborted ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected peer output {answer:?}"));
    let latency = Duration::from_nanos(seen.saturating_sub(sent) as u64);
    // The target is 200 ms (measured in the benchmark); a loaded CI machine gets slack.
    assert!(latency < Duration::from_secs(2), "abort took {latency:?}");
    let status = tokio::time::timeout(Duration::from_secs(30), peer.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    op.complete().await.unwrap();
}
