//! A grandchild that calls `setsid` leaves the process group: a plain group stop misses
//! it, the escape-proof (cgroup) mode catches it, and the cgroup is removed afterwards.

mod common;

use std::time::Duration;

use common::process::{
    BOUND, TestScope, alive, cgroup_v2_writable, read_until_ready, spawn_ready, wait_until,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::process::{EscapeProof, StdioMode, StopEnd, WorkerCommand};

const SETSID: &str = env!("CARGO_BIN_EXE_worker-setsid");

#[tokio::test]
async fn plain_group_stop_misses_a_setsid_grandchild() {
    let scope = TestScope::new();
    let (mut worker, escaped) =
        spawn_ready(WorkerCommand::new(SETSID).args(["--marker", &scope.marker])).await;
    worker.stop(Duration::from_secs(10)).await;
    assert!(
        alive(escaped[0]),
        "the setsid grandchild is outside the group"
    );
    // Clean up what the plain mode cannot.
    common::process::kill_marked(&scope.marker);
    wait_until("escaped grandchild gone", BOUND, || !alive(escaped[0]));
    scope.assert_clean();
}

#[tokio::test]
async fn escape_proof_mode_catches_a_setsid_grandchild() {
    if !cgroup_v2_writable() {
        eprintln!("skipped: no writable cgroup v2 hierarchy here");
        return;
    }
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(SETSID)
        .args(["--marker", &scope.marker])
        .stdout(StdioMode::Piped)
        .escape_mode(EscapeProof::Cgroup)
        .spawn()
        .expect("spawn");
    let cgroup = worker.info().cgroup.clone().expect("runs in a cgroup");
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).expect("cgroup.procs");
    assert!(
        procs.lines().any(|l| l.trim() == worker.pid().to_string()),
        "{procs}"
    );
    let mut out = BufReader::new(worker.take_stdout().expect("stdout")).lines();
    let escaped = read_until_ready(&mut out).await;
    assert!(alive(escaped[0]));

    let outcome = worker.stop(Duration::from_secs(10)).await;
    assert_eq!(outcome.end, StopEnd::Terminated);
    assert!(!alive(escaped[0]), "setsid grandchild survived");
    drop(worker);
    wait_until("cgroup removed", BOUND, || !cgroup.exists());
    scope.assert_clean();
}

#[tokio::test]
async fn escape_proof_catches_an_orphaned_setsid_grandchild() {
    if !cgroup_v2_writable() {
        eprintln!("skipped: no writable cgroup v2 hierarchy here");
        return;
    }
    let scope = TestScope::new();
    let (mut worker, escaped) = spawn_ready(
        WorkerCommand::new(SETSID)
            .args(["--exit", "--marker", &scope.marker])
            .escape_proof(true),
    )
    .await;
    let status = worker.wait().await.expect("wait");
    assert!(status.success());
    assert!(alive(escaped[0]), "orphan lives on after its parent exited");
    let outcome = worker.stop(Duration::from_secs(10)).await;
    assert_eq!(outcome.end, StopEnd::Terminated);
    assert!(!alive(escaped[0]));
    scope.assert_clean();
}
