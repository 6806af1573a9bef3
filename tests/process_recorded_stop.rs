//! Stopping a group recorded earlier (as crash recovery does for a dead supervisor's
//! workers): only processes whose identity checks out are ever signalled.

mod common;

use std::time::Duration;

use common::process::{TestScope, alive, read_until_ready};
use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::process::{StdioMode, Verdict, WorkerCommand, stop_recorded};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");

/// Watches `pid` for a while: a signal sent to it would have ended it by then.
async fn stays_alive(pid: i32) -> bool {
    for _ in 0..30 {
        if !alive(pid) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test]
async fn other_start_time_is_never_signalled() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(HANG)
        .args(["--marker", &scope.marker])
        .stdout(StdioMode::Null)
        .spawn()
        .expect("spawn");
    let mut record = worker.info().recorded();
    record.leader.start_ticks += 1;
    let stop = stop_recorded(&record, None).await;
    assert_eq!(stop.verdict, Verdict::PidReused);
    assert_eq!(stop.outcome.groups, 0);
    assert!(
        stays_alive(worker.pid()).await,
        "a process with another start time was signalled"
    );
    worker.kill().await;
    scope.assert_clean();
}

#[tokio::test]
async fn other_boot_is_never_signalled() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(HANG)
        .args(["--marker", &scope.marker])
        .stdout(StdioMode::Null)
        .spawn()
        .expect("spawn");
    let mut record = worker.info().recorded();
    record.leader.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
    let stop = stop_recorded(&record, None).await;
    assert_eq!(stop.verdict, Verdict::OtherBoot);
    assert!(stays_alive(worker.pid()).await);
    worker.kill().await;
    scope.assert_clean();
}

#[tokio::test]
async fn live_leader_with_matching_identity_is_stopped_with_its_group() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(TREE)
        .args(["2", "--marker", &scope.marker])
        .stdout(StdioMode::Piped)
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(worker.take_stdout().expect("stdout")).lines();
    let children = read_until_ready(&mut out).await;
    let stop = stop_recorded(&worker.info().recorded(), Some(Duration::from_secs(10))).await;
    assert_eq!(stop.verdict, Verdict::LeaderAlive);
    assert!(stop.outcome.is_gone());
    for pid in children {
        assert!(!alive(pid));
    }
    worker.wait().await.expect("reap");
    scope.assert_clean();
}

#[tokio::test]
async fn members_left_by_a_dead_leader_are_stopped() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(TREE)
        .args(["2", "--exit", "--marker", &scope.marker])
        .stdout(StdioMode::Piped)
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(worker.take_stdout().expect("stdout")).lines();
    let children = read_until_ready(&mut out).await;
    assert!(worker.wait().await.expect("wait").success());
    let record = worker.info().recorded();
    assert!(!record.leader.is_same_process_alive());

    let stop = stop_recorded(&record, Some(Duration::from_secs(10))).await;
    assert_eq!(stop.verdict, Verdict::MembersRemained);
    for pid in children {
        assert!(!alive(pid));
    }
    let again = stop_recorded(&record, Some(Duration::from_secs(10))).await;
    assert_eq!(again.verdict, Verdict::Gone);
    scope.assert_clean();
}
