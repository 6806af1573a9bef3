//! Stopping a group recorded earlier (as crash recovery does for a dead supervisor's
//! workers): only processes whose identity checks out are ever signalled.

mod common;

use std::time::Duration;

use common::process::{BOUND, TestScope, alive, cgroup_v2_writable, spawn_ready, wait_until};
use tom_dist_ledger::process::{EscapeProof, StdioMode, Verdict, WorkerCommand, stop_recorded};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const SETSID: &str = env!("CARGO_BIN_EXE_worker-setsid");

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
    let (mut worker, children) =
        spawn_ready(WorkerCommand::new(TREE).args(["2", "--marker", &scope.marker])).await;
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
    let (mut worker, children) =
        spawn_ready(WorkerCommand::new(TREE).args(["2", "--exit", "--marker", &scope.marker]))
            .await;
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

#[tokio::test]
async fn recorded_cgroup_is_stopped_after_its_leader_died() {
    if !cgroup_v2_writable() {
        eprintln!("skipped: no writable cgroup v2 hierarchy here");
        return;
    }
    let scope = TestScope::new();
    let (mut worker, pids) = spawn_ready(
        WorkerCommand::new(SETSID)
            .args(["--exit", "--marker", &scope.marker])
            .escape_mode(EscapeProof::Cgroup),
    )
    .await;
    let escaped = pids[0];
    assert!(worker.wait().await.expect("wait").success());
    let record = worker.info().recorded();
    let cgroup = record.cgroup.clone().expect("cgroup recorded");

    let stop = stop_recorded(&record, Some(Duration::from_secs(10))).await;
    assert_eq!(stop.verdict, Verdict::MembersRemained);
    assert!(
        !alive(escaped),
        "escaped member of the recorded cgroup survived"
    );
    drop(worker);
    wait_until("cgroup removed", BOUND, || !cgroup.exists());
    scope.assert_clean();
}
