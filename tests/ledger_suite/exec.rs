//! Exec workers: child processes as calls, on any backend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use tom_dist_ledger::Error;
use tom_dist_ledger::ledger::{CallOptions, ExecWorker, OperationOptions};
use tom_dist_ledger::process::{RunOptions, WorkerCommand};

use super::{Backend, connect, log_of};
use crate::common::process::{TestScope, alive, assert_none_left};

const PRINT_JSON: &str = env!("CARGO_BIN_EXE_worker-print-json");
const EXIT: &str = env!("CARGO_BIN_EXE_worker-exit");
const WRITE_RESULT: &str = env!("CARGO_BIN_EXE_worker-write-result");
const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const IGNORE_TERM: &str = env!("CARGO_BIN_EXE_worker-ignore-term");
const STDERR_LINES: &str = env!("CARGO_BIN_EXE_worker-stderr-lines");

/// A channel that fires when a worker prints `ready` on stdout.
pub fn ready_signal() -> (
    impl FnMut(&str) + Send + 'static,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    (
        move |line: &str| {
            if line == "ready"
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        },
        rx,
    )
}

pub async fn ready(rx: tokio::sync::oneshot::Receiver<()>) {
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("worker ready in time")
        .expect("worker printed ready");
}

pub async fn stdio_worker_returns_json(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let exits = Arc::new(Mutex::new(Vec::new()));
    let e = exits.clone();
    let call = op.exec_stdio_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(PRINT_JSON).args([
            "--value",
            "7",
            "--marker",
            &scope.marker,
        ]))
        .run(RunOptions::default().on_exit({
            let f = move |code| e.lock().unwrap().push(code);
            move |s| f(tom_dist_ledger::ledger::exit_code(s))
        })),
    );
    let v = call.join().await.unwrap();
    assert_eq!(v["value"], 7);
    assert_eq!(*exits.lock().unwrap(), vec![0]);
    let log = log_of(&ledger, op.operation_id()).await;
    assert!(log.contains(&format!("CALL_COMPLETED callId={}", call.call_id())));
    assert_eq!(call.description(), Some("Stdio worker"));
    scope.assert_clean();
    op.complete().await.unwrap();
}

pub async fn worker_gets_the_nested_environment(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let script = r#"printf '{"op":"%s","call":"%s","participant":"%s","dir":"%s","url":"%s","etcd":"%s"}' "$TOM_LEDGER_OPERATION" "$TOM_LEDGER_CALL" "$TOM_LEDGER_PARTICIPANT" "$TOM_LEDGER_DIR" "$TOM_LEDGER_URL" "$TOM_LEDGER_ETCD""#;
    let call = op.exec_stdio_worker::<Value>(ExecWorker::new(
        WorkerCommand::new("sh").args(["-c", script]),
    ));
    let v = call.join().await.unwrap();
    assert_eq!(v["op"], op.operation_id().as_str());
    assert_eq!(v["call"], call.call_id().as_str());
    assert_eq!(v["participant"], "cli");
    let (variable, value) = b
        .shared_location()
        .expect("a behaviour of ledgers shared with other processes, run on one that is not");
    let key = match variable {
        "TOM_LEDGER_DIR" => "dir",
        "TOM_LEDGER_URL" => "url",
        "TOM_LEDGER_ETCD" => "etcd",
        other => panic!("unknown ledger variable {other}"),
    };
    assert_eq!(v[key], value.as_str());
    op.complete().await.unwrap();
}

pub async fn non_zero_exit_fails_with_code_and_stderr(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.exec_stdio_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(EXIT).args([
            "3",
            "--message",
            "disk on fire",
            "--marker",
            &scope.marker,
        ]))
        .call(CallOptions::new().fail_on_crash(false)),
    );
    let err = call.join().await.unwrap_err().to_string();
    assert!(err.contains("exit"), "{err}");
    assert!(err.contains('3'), "{err}");
    assert!(err.contains("disk on fire"), "{err}");
    assert!(op.failure().is_none());
    op.complete().await.unwrap();
}

pub async fn file_worker_reads_the_finished_file(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.json");
    let call = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(WRITE_RESULT).args([
            path.to_str().unwrap(),
            "--content",
            r#"{"n":1}"#,
            "--marker",
            &scope.marker,
        ])),
        &path,
    );
    assert_eq!(call.join().await.unwrap()["n"], 1);
    assert!(!path.exists(), "result file deleted after reading");
    // A slow writer: the reader must wait for the exit, not read half a file.
    let slow = dir.path().join("slow.json");
    let big = format!("{{\"text\":\"{}\"}}", "y".repeat(20_000));
    let call = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(WRITE_RESULT).args([
            slow.to_str().unwrap(),
            "--slow",
            "--content",
            &big,
            "--marker",
            &scope.marker,
        ]))
        .run(RunOptions::default().delete_result_file(false)),
        &slow,
    );
    assert_eq!(
        call.join().await.unwrap()["text"].as_str().unwrap().len(),
        20_000
    );
    assert!(slow.exists(), "kept with delete_result_file(false)");
    op.complete().await.unwrap();
}

pub async fn file_worker_without_file_fails_at_once(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.json");
    let started = Instant::now();
    let call = op.exec_file_result_worker::<Value>(
        ExecWorker::new(
            WorkerCommand::new(WRITE_RESULT).args([path.to_str().unwrap(), "--no-file"]),
        )
        .call(CallOptions::new().fail_on_crash(false)),
        &path,
    );
    let err = call.join().await.unwrap_err().to_string();
    assert!(err.contains("never.json"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "no endless polling"
    );
    op.complete().await.unwrap();
}

pub async fn timeout_stops_the_whole_tree(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let call = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(FORK_TREE).args(["3", "--marker", &scope.marker]))
            .call(CallOptions::new().fail_on_crash(false))
            .run(RunOptions::default().timeout(Duration::from_millis(500))),
        &path,
    );
    let err = call.join().await.unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
    scope.assert_clean();
    op.complete().await.unwrap();
}

pub async fn cancel_runs_the_stop_ladder(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    op.set_worker_grace(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let (on_line, rx) = ready_signal();
    let call = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(IGNORE_TERM).args(["--marker", &scope.marker]))
            .run(RunOptions::default().on_stdout(on_line)),
        dir.path().join("r.json"),
    );
    ready(rx).await;
    // While it runs, its identity is in the frame.
    let store = ledger.store().clone();
    let opid = op.operation_id().clone();
    let cid = call.call_id().clone();
    super::wait_until("process recorded in the frame", || {
        let store = store.clone();
        let opid = opid.clone();
        let cid = cid.clone();
        async move {
            store
                .read(&opid)
                .await
                .unwrap()
                .frame(&cid)
                .is_some_and(|f| f.process.is_some())
        }
    })
    .await;
    let frame = store
        .read(&opid)
        .await
        .unwrap()
        .frame(&cid)
        .cloned()
        .unwrap();
    let process = frame.process.unwrap();
    assert_eq!(process.pid, process.pgid);
    assert!(process.start_ticks > 0);
    assert!(process.command.contains(&scope.marker));
    assert!(alive(process.pid));
    call.cancel().await;
    assert!(call.is_cancelled());
    assert!(matches!(call.result(), Err(Error::Cancelled(_))));
    scope.assert_clean();
    assert!(op.failure().is_none());
    op.complete().await.unwrap();
}

pub async fn kill_signals_the_group(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (on_line, rx) = ready_signal();
    let code = Arc::new(Mutex::new(None));
    let c = code.clone();
    let call = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(HANG).args(["--marker", &scope.marker]))
            .call(CallOptions::new().fail_on_crash(false))
            .run(RunOptions::default().on_stdout(on_line).on_exit({
                let f = move |x| *c.lock().unwrap() = Some(x);
                move |s| f(tom_dist_ledger::ledger::exit_code(s))
            })),
        dir.path().join("r.json"),
    );
    ready(rx).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !call.kill(Signal::SIGTERM) {
        assert!(Instant::now() < deadline, "kill handler installed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = call.join().await.unwrap_err().to_string();
    assert!(err.contains("SIGTERM") || err.contains("signal"), "{err}");
    assert_eq!(*code.lock().unwrap(), Some(143));
    scope.assert_clean();
    op.complete().await.unwrap();
}

pub async fn missing_executable_is_a_spawn_error(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.exec_stdio_worker::<Value>(
        ExecWorker::new(WorkerCommand::new("/nonexistent/tool-xyz"))
            .call(CallOptions::new().fail_on_crash(false)),
    );
    let err = call.join().await.unwrap_err().to_string();
    assert!(
        err.contains("cannot start `/nonexistent/tool-xyz`"),
        "{err}"
    );
    op.complete().await.unwrap();
}

pub async fn stderr_is_streamed_in_whole_lines(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let call = op.exec_stdio_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(STDERR_LINES).args(["300"])).run(
            RunOptions::default().on_stderr(move |line| l.lock().unwrap().push(line.to_string())),
        ),
    );
    assert_eq!(call.join().await.unwrap()["lines"], 300);
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 300);
    for (i, line) in lines.iter().enumerate() {
        let expected = format!("line {i}: grüße {}", ".".repeat(i % 50));
        assert_eq!(line.trim_end(), expected.trim_end());
    }
    op.complete().await.unwrap();
}

pub async fn server_request_times_out(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.exec_server_request(
        CallOptions::<u32>::new().fail_on_crash(false),
        Some(Duration::from_millis(100)),
        std::future::pending::<Result<u32, String>>(),
    );
    let err = call.join().await.unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
    let ok = op.exec_server_request(CallOptions::<u32>::new(), None, async {
        Ok::<_, String>(5)
    });
    assert_eq!(ok.join().await.unwrap(), 5);
    assert_eq!(ok.description(), Some("Server request"));
    op.complete().await.unwrap();
}

pub async fn worker_failure_fails_the_operation(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    op.set_worker_grace(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let (on_line, rx) = ready_signal();
    let survivor = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(FORK_TREE).args(["2", "--marker", &scope.marker]))
            .run(RunOptions::default().on_stdout(on_line)),
        dir.path().join("r.json"),
    );
    ready(rx).await;
    let failing = op.exec_stdio_worker::<Value>(ExecWorker::new(WorkerCommand::new(EXIT).args([
        "1",
        "--marker",
        &scope.marker,
    ])));
    let info = tokio::time::timeout(Duration::from_secs(20), op.failed())
        .await
        .expect("operation fails");
    assert_eq!(info.crashed_call_ids, vec![failing.call_id().clone()]);
    // The failure stops the other worker's whole tree.
    survivor.wait().await;
    assert!(survivor.is_failed());
    assert_none_left(&scope.marker);
}
