//! The stop ladder on a whole process group: SIGTERM reaches every process of the tree,
//! the ladder returns as soon as the group is gone (not after the grace), the worker is
//! reaped, and stopping a finished worker reports that nothing was left.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::process::{TestScope, alive, read_until_ready, spawn_ready, state};
use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::process::{StdioMode, StopEnd, WorkerCommand};

const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const EXIT: &str = env!("CARGO_BIN_EXE_worker-exit");

#[tokio::test]
async fn term_stops_the_whole_tree_and_returns_early() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(TREE)
        .args(["3", "--marker", &scope.marker])
        .stdout(StdioMode::Piped)
        .spawn()
        .expect("spawn");
    assert_eq!(worker.pgid(), worker.pid());
    let mut out = BufReader::new(worker.take_stdout().expect("stdout")).lines();
    let children = read_until_ready(&mut out).await;
    assert_eq!(children.len(), 3);
    for pid in &children {
        assert!(alive(*pid));
    }

    let grace = Duration::from_secs(30);
    let outcome = worker.stop(grace).await;
    assert_eq!(outcome.end, StopEnd::Terminated);
    assert!(outcome.elapsed < grace / 2, "took {:?}", outcome.elapsed);
    let status = outcome.status.expect("worker reaped");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    for pid in children.iter().chain([&worker.pid()]) {
        assert!(!alive(*pid), "pid {pid} survived");
    }
    // The worker itself was reaped by the ladder: no zombie left.
    assert_eq!(state(worker.pid()), None);
    scope.assert_clean();
}

#[tokio::test]
async fn stopping_a_finished_worker_reports_already_gone() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(EXIT)
        .args(["0", "--marker", &scope.marker])
        .spawn()
        .expect("spawn");
    let status = worker.wait().await.expect("wait");
    assert!(status.success());
    let outcome = worker.stop(Duration::from_secs(30)).await;
    assert_eq!(outcome.end, StopEnd::AlreadyGone);
    assert_eq!(outcome.status, Some(status));
    scope.assert_clean();
}

#[tokio::test]
async fn kill_skips_the_grace() {
    let scope = TestScope::new();
    let (mut worker, children) =
        spawn_ready(WorkerCommand::new(TREE).args(["2", "--marker", &scope.marker])).await;
    let outcome = worker.kill().await;
    assert_eq!(outcome.end, StopEnd::Killed);
    assert_eq!(outcome.status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    for pid in children {
        assert!(!alive(pid));
    }
    scope.assert_clean();
}

#[tokio::test]
async fn dropping_a_running_worker_kills_its_group() {
    let scope = TestScope::new();
    let (worker, _) =
        spawn_ready(WorkerCommand::new(TREE).args(["2", "--marker", &scope.marker])).await;
    drop(worker);
    scope.assert_clean();
}
