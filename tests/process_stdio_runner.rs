//! The stdio runner: stdout is the result, stderr streams; every failure mode fails
//! clearly and leaves no process behind.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{TestScope, alive};
use tokio_util::sync::CancellationToken;
use tom_dist_ledger::Error;
use tom_dist_ledger::process::{RunOptions, StopReason, WorkerCommand, WorkerInfo, run_stdio};

const JSON: &str = env!("CARGO_BIN_EXE_worker-print-json");
const EXIT: &str = env!("CARGO_BIN_EXE_worker-exit");
const BIG: &str = env!("CARGO_BIN_EXE_worker-big-stdout");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

#[tokio::test]
async fn stdout_is_the_result_and_stderr_streams() {
    let scope = TestScope::new();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let spawned: Arc<Mutex<Option<WorkerInfo>>> = Arc::default();
    let (l, s) = (lines.clone(), spawned.clone());
    let opts = RunOptions::default()
        .on_stderr(move |line| l.lock().expect("lock").push(line.to_owned()))
        .on_spawn(move |info| *s.lock().expect("lock") = Some(info.clone()));
    let out = run_stdio(
        WorkerCommand::new(JSON).args(["--value", "7", "--marker", &scope.marker]),
        opts,
    )
    .await
    .expect("run");
    let text = String::from_utf8(out.data).expect("utf8");
    assert_eq!(text, format!("{{\"value\":7,\"pid\":{}}}\n", out.info.pid));
    assert!(out.status.success());
    assert_eq!(*lines.lock().expect("lock"), ["computing value 7"]);
    let info = spawned
        .lock()
        .expect("lock")
        .clone()
        .expect("on_spawn called");
    assert_eq!(info, out.info);
    assert_eq!(info.pgid, info.pid);
    assert!(info.identity.start_ticks > 0);
    scope.assert_clean();
}

#[tokio::test]
async fn nonzero_exit_fails_with_code_and_stderr_tail() {
    let scope = TestScope::new();
    let exit_seen = Arc::new(Mutex::new(None));
    let e = exit_seen.clone();
    let opts =
        RunOptions::default().on_exit(move |status| *e.lock().expect("lock") = status.code());
    let err = run_stdio(
        WorkerCommand::new(EXIT).args(["3", "--message", "disk full", "--marker", &scope.marker]),
        opts,
    )
    .await
    .expect_err("must fail");
    match &err {
        Error::WorkerFailed { status, stderr, .. } => {
            assert_eq!(status, "exited with code 3");
            assert_eq!(stderr, "disk full");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .ends_with("exited with code 3; stderr: disk full"),
        "{err}"
    );
    assert_eq!(*exit_seen.lock().expect("lock"), Some(3));
}

#[tokio::test]
async fn missing_executable_fails_the_run() {
    let err = run_stdio(
        WorkerCommand::new("/nonexistent/worker"),
        RunOptions::default(),
    )
    .await
    .expect_err("must fail");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
}

#[tokio::test]
async fn stdout_beyond_the_limit_fails_and_stops_the_worker() {
    let scope = TestScope::new();
    let opts = RunOptions::default().max_stdout(1000);
    let err = run_stdio(
        WorkerCommand::new(BIG).args(["10000000", "--marker", &scope.marker]),
        opts,
    )
    .await
    .expect_err("must fail");
    match err {
        Error::OutputTooLarge { limit, .. } => assert_eq!(limit, 1000),
        other => panic!("unexpected {other:?}"),
    }
    scope.assert_clean();
}

#[tokio::test]
async fn stdout_at_the_limit_is_accepted() {
    let scope = TestScope::new();
    let opts = RunOptions::default().max_stdout(4096);
    let out = run_stdio(
        WorkerCommand::new(BIG).args(["4096", "--marker", &scope.marker]),
        opts,
    )
    .await
    .expect("run");
    assert_eq!(out.data.len(), 4096);
}

#[tokio::test]
async fn timeout_stops_the_whole_tree() {
    let scope = TestScope::new();
    let spawned: Arc<Mutex<Option<WorkerInfo>>> = Arc::default();
    let s = spawned.clone();
    let opts = RunOptions::default()
        .timeout(Duration::from_millis(300))
        .grace(Duration::from_secs(10))
        .on_spawn(move |info| *s.lock().expect("lock") = Some(info.clone()));
    let err = run_stdio(
        WorkerCommand::new(TREE).args(["3", "--marker", &scope.marker]),
        opts,
    )
    .await
    .expect_err("must time out");
    match err {
        Error::Timeout { after, what } => {
            assert_eq!(after, Duration::from_millis(300));
            assert!(what.contains("worker-fork-tree"), "{what}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let info = spawned.lock().expect("lock").clone().expect("spawned");
    assert!(!alive(info.pid));
    // Nothing of the tree is left, grandchildren included, right when the run returns.
    assert!(common::process::marked_pids(&scope.marker).is_empty());
    scope.assert_clean();
}

#[tokio::test]
async fn cancellation_stops_the_worker() {
    let scope = TestScope::new();
    let token = CancellationToken::new();
    let t = token.clone();
    let opts = RunOptions::default()
        .cancel(token)
        .on_spawn(move |_| t.cancel());
    let err = run_stdio(
        WorkerCommand::new(HANG).args(["--marker", &scope.marker]),
        opts,
    )
    .await
    .expect_err("must be cancelled");
    match err {
        Error::WorkerStopped { reason, .. } => assert_eq!(reason, StopReason::Cancelled),
        other => panic!("unexpected {other:?}"),
    }
    scope.assert_clean();
}

#[tokio::test]
async fn leftover_children_are_stopped_after_a_normal_exit() {
    let scope = TestScope::new();
    let out = run_stdio(
        WorkerCommand::new(TREE).args(["2", "--exit", "--marker", &scope.marker]),
        RunOptions::default(),
    )
    .await
    .expect("run");
    let text = String::from_utf8_lossy(&out.data);
    assert!(text.ends_with("ready\n"), "{text}");
    assert!(common::process::marked_pids(&scope.marker).is_empty());
    scope.assert_clean();
}
