//! Stopping a group recorded earlier (as crash recovery does for a dead supervisor's
//! workers): only processes whose identity checks out are ever signalled.

mod common;

use std::time::Duration;

use common::process::{BOUND, TestScope, alive, cgroup_v2_writable, spawn_ready, wait_until};
use tom_dist_ledger::process::{
    EscapeProof, StdioMode, Verdict, WorkerCommand, plan_recorded, stop_recorded,
};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const SETSID: &str = env!("CARGO_BIN_EXE_worker-setsid");
const MIXED: &str = env!("CARGO_BIN_EXE_worker-mixed-group");

/// The environment entry that proves membership in these tests.
const PROOF: &str = "TOM_LEDGER_OPERATION=op-of-the-test";

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
    let (mut worker, children) = spawn_ready(
        WorkerCommand::new(TREE)
            .args(["2", "--exit", "--marker", &scope.marker])
            .env("TOM_LEDGER_OPERATION", "op-of-the-test"),
    )
    .await;
    assert!(worker.wait().await.expect("wait").success());
    let record = worker.info().recorded().member_proof(PROOF);
    assert!(!record.leader.is_same_process_alive());
    let plan = plan_recorded(&record);
    let mut planned: Vec<i32> = plan.processes.iter().map(|p| p.pid).collect();
    planned.sort();
    let mut expected = children.clone();
    expected.sort();
    assert_eq!(planned, expected, "the plan lists what would be signalled");
    assert!(plan.processes.iter().all(|p| p.command[0] == TREE));
    for &pid in &children {
        assert!(alive(pid), "planning signals nothing");
    }

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

#[tokio::test]
async fn members_of_a_leaderless_group_are_signalled_only_on_their_own_proof() {
    let scope = TestScope::new();
    let (mut worker, pids) = spawn_ready(
        WorkerCommand::new(MIXED)
            .args(["--exit", "--marker", &scope.marker])
            .env("TOM_LEDGER_OPERATION", "op-of-the-test"),
    )
    .await;
    let (carrying, bare) = (pids[0], pids[1]);
    assert!(worker.wait().await.expect("wait").success());
    let record = worker.info().recorded().member_proof(PROOF);
    // Both started after the leader and sit in its group; only one carries the proof.
    let stop = stop_recorded(&record, Some(Duration::from_secs(10))).await;
    assert_eq!(stop.verdict, Verdict::MembersRemained);
    assert!(
        !alive(carrying),
        "the member that proved membership was not stopped"
    );
    assert!(
        stays_alive(bare).await,
        "a member without proof was signalled by group number"
    );
    assert!(
        stop.refused.iter().any(|r| r.contains(&bare.to_string())),
        "{:?}",
        stop.refused
    );
    // Without any proof configured, nothing of a leaderless group is signalled.
    let mut unproven = worker.info().recorded();
    unproven.member_proof = None;
    let again = stop_recorded(&unproven, None).await;
    assert_eq!(again.verdict, Verdict::Gone);
    assert!(stays_alive(bare).await);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bare),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the test's own process");
    scope.assert_clean();
}

#[tokio::test]
async fn init_and_group_one_are_never_targets() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(HANG)
        .args(["--marker", &scope.marker])
        .stdout(StdioMode::Null)
        .env("TOM_LEDGER_OPERATION", "op-of-the-test")
        .spawn()
        .expect("spawn");
    // A recorded leader that is gone, with the group number 1.
    let mut record = worker.info().recorded().member_proof(PROOF);
    record.leader.start_ticks += 1;
    record.leader.pid = i32::MAX - 1;
    record.pgid = 1;
    let plan = plan_recorded(&record);
    assert_eq!(plan.verdict, Verdict::Refused);
    assert!(plan.processes.is_empty());
    let stop = stop_recorded(&record, None).await;
    assert_eq!(stop.verdict, Verdict::Refused);
    assert_eq!(stop.outcome.groups, 0);
    assert!(stays_alive(worker.pid()).await);
    worker.kill().await;
    scope.assert_clean();
}

#[tokio::test]
async fn another_pid_namespace_is_never_signalled() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(HANG)
        .args(["--marker", &scope.marker])
        .stdout(StdioMode::Null)
        .spawn()
        .expect("spawn");
    let mut record = worker.info().recorded();
    assert!(record.leader.pid_ns.is_some(), "the namespace is recorded");
    record.leader.pid_ns = record.leader.pid_ns.map(|n| n ^ 1);
    let stop = stop_recorded(&record, None).await;
    assert_eq!(stop.verdict, Verdict::OtherNamespace);
    assert!(stays_alive(worker.pid()).await);
    worker.kill().await;
    scope.assert_clean();
}
