//! The file-result runner: the result is read once the worker has exited and the file is
//! complete; exit codes count; a missing file fails at once; timeouts stop the tree.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::TestScope;
use tom_dist_ledger::Error;
use tom_dist_ledger::process::{RunOptions, WorkerCommand, run_file_result};

const WRITE: &str = env!("CARGO_BIN_EXE_worker-write-result");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");

fn writer(scope: &TestScope, path: &std::path::Path, extra: &[&str]) -> WorkerCommand {
    WorkerCommand::new(WRITE)
        .arg(path)
        .args(extra)
        .args(["--marker", &scope.marker])
}

#[tokio::test]
async fn reads_the_result_and_deletes_the_file() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("result.json");
    let out_lines = Arc::new(Mutex::new(Vec::new()));
    let err_lines = Arc::new(Mutex::new(Vec::new()));
    let exit = Arc::new(Mutex::new(None));
    let (o, e, x) = (out_lines.clone(), err_lines.clone(), exit.clone());
    let opts = RunOptions::default()
        .on_stdout(move |l| o.lock().expect("lock").push(l.to_owned()))
        .on_stderr(move |l| e.lock().expect("lock").push(l.to_owned()))
        .on_exit(move |s| *x.lock().expect("lock") = s.code());
    let cmd = writer(
        &scope,
        &path,
        &[
            "--content",
            "{\"n\":1}",
            "--stdout",
            "working",
            "--stderr",
            "note",
        ],
    );
    let out = run_file_result(cmd, &path, opts).await.expect("run");
    assert_eq!(out.data, b"{\"n\":1}");
    assert!(!path.exists(), "result file deleted");
    assert_eq!(*out_lines.lock().expect("lock"), ["working"]);
    assert_eq!(*err_lines.lock().expect("lock"), ["note"]);
    assert_eq!(*exit.lock().expect("lock"), Some(0));
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    scope.assert_clean();
}

#[tokio::test]
async fn keeps_the_file_when_asked() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("result.json");
    let opts = RunOptions::default().delete_result_file(false);
    let out = run_file_result(writer(&scope, &path, &[]), &path, opts)
        .await
        .expect("run");
    assert_eq!(out.data, b"{\"ok\":true}");
    assert_eq!(std::fs::read(&path).expect("kept"), b"{\"ok\":true}");
}

#[tokio::test]
async fn slow_partial_file_is_read_only_after_exit() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("result.json");
    let content = "{\"pieces\":[1,2,3,4,5,6,7,8,9,10]}";
    let out = run_file_result(
        writer(&scope, &path, &["--slow", "--content", content]),
        &path,
        RunOptions::default(),
    )
    .await
    .expect("run");
    assert_eq!(String::from_utf8(out.data).expect("utf8"), content);
}

#[tokio::test]
async fn nonzero_exit_fails_even_with_a_result_file() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("result.json");
    let err = run_file_result(
        writer(&scope, &path, &["--exit", "4", "--stderr", "half done"]),
        &path,
        RunOptions::default(),
    )
    .await
    .expect_err("must fail");
    match err {
        Error::WorkerFailed {
            status,
            exit,
            stderr,
            ..
        } => {
            assert_eq!(status, "exited with code 4");
            assert_eq!(exit.code(), Some(4));
            assert_eq!(stderr, "half done");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!path.exists(), "failed run's result file deleted");
}

#[tokio::test]
async fn exit_zero_without_file_fails_at_once() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("result.json");
    let start = Instant::now();
    let err = run_file_result(
        writer(&scope, &path, &["--no-file"]),
        &path,
        RunOptions::default(),
    )
    .await
    .expect_err("must fail");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "no polling: {:?}",
        start.elapsed()
    );
    match &err {
        Error::ResultFileMissing { path: missing, .. } => assert_eq!(missing, &path),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn timeout_stops_the_tree_and_fails() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("result.json");
    let opts = RunOptions::default().timeout(Duration::from_millis(300));
    let cmd = WorkerCommand::new(TREE).args(["3", "--marker", &scope.marker]);
    let err = run_file_result(cmd, &path, opts)
        .await
        .expect_err("must time out");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(common::process::marked_pids(&scope.marker).is_empty());
    scope.assert_clean();
}

/// The original's own test: the file exists beforehand and `echo` is the worker.
#[tokio::test]
async fn existing_result_file_and_echo_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("result.json");
    std::fs::write(&path, "{\"status\":\"done\"}").expect("write");
    let out = run_file_result(
        WorkerCommand::new("echo").arg("hi"),
        &path,
        RunOptions::default(),
    )
    .await
    .expect("run");
    assert_eq!(out.data, b"{\"status\":\"done\"}");
    assert!(!path.exists());
}
