//! A worker (and a tree) that ignores SIGTERM is SIGKILLed once the grace has passed, and
//! the ladder returns promptly after that.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::process::{TestScope, alive, spawn_ready};
use tom_dist_ledger::process::{StopEnd, WorkerCommand};

const IGNORE: &str = env!("CARGO_BIN_EXE_worker-ignore-term");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");

#[tokio::test]
async fn ignoring_worker_is_killed_after_grace() {
    let scope = TestScope::new();
    let (mut worker, _) =
        spawn_ready(WorkerCommand::new(IGNORE).args(["--marker", &scope.marker])).await;

    let grace = Duration::from_millis(300);
    let outcome = worker.stop(grace).await;
    assert_eq!(outcome.end, StopEnd::Killed);
    assert!(
        outcome.elapsed >= grace,
        "killed before the grace: {:?}",
        outcome.elapsed
    );
    assert_eq!(outcome.status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    scope.assert_clean();
}

#[tokio::test]
async fn ignoring_tree_is_killed_whole() {
    let scope = TestScope::new();
    let (mut worker, children) = spawn_ready(WorkerCommand::new(TREE).args([
        "3",
        "--ignore-term",
        "--marker",
        &scope.marker,
    ]))
    .await;
    let outcome = worker.stop(Duration::from_millis(200)).await;
    assert_eq!(outcome.end, StopEnd::Killed);
    for pid in children {
        assert!(!alive(pid), "grandchild {pid} survived");
    }
    scope.assert_clean();
}
