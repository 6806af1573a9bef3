//! The initiator's death ends its operation: only the initiator may complete it, so a
//! SIGKILLed initiator fails the operation even when none of its frames (or no frame at
//! all) has `fail_on_crash`. The surviving participant coordinates the cleanup.

mod common;

use std::time::{Duration, Instant};

use common::crash::{initiator, log, wait_archived};
use common::peer::Peer;
use common::process::{TestScope, assert_none_left, marked_pids};
use nix::sys::signal::Signal;
use serde_json::Value;
use tom_dist_ledger::ledger::{ExecWorker, OperationOptions};
use tom_dist_ledger::model::{OperationState, ParticipantState};
use tom_dist_ledger::process::{RunOptions, WorkerCommand};
use tom_dist_ledger::{OperationId, ParticipantId};

const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

fn op_id(scope: &TestScope) -> OperationId {
    OperationId::parse(format!("op-{}", scope.marker)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_initiator_without_frames_fails_its_operation() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let id = op_id(&scope);
    let mut peer = Peer::start(
        "create-hang",
        dir.path(),
        &id,
        "cli",
        &["--no-call", "--marker", &scope.marker],
    );
    assert_eq!(peer.line().await, "ready");
    let ledger = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("bridge").unwrap())
    })
    .await;
    let op = ledger
        .join_operation(&id, OperationOptions::new())
        .await
        .unwrap();
    assert!(!op.is_initiator());
    let killed = Instant::now();
    peer.signal(Signal::SIGKILL);
    let info = tokio::time::timeout(Duration::from_secs(20), op.failed())
        .await
        .expect("the survivor sees the operation fail");
    let latency = killed.elapsed();
    assert!(latency < Duration::from_secs(10), "after {latency:?}");
    let reason = info.reason.unwrap();
    assert!(reason.contains("initiator `cli` crashed"), "{reason}");
    let store = ledger.store().clone();
    let data = wait_archived(&store, &id).await;
    assert_eq!(data.operation_state, OperationState::Failed);
    assert_eq!(
        data.participants[&ParticipantId::parse("cli").unwrap()].state,
        ParticipantState::Crashed
    );
    let log = log(&store, &id).await;
    assert!(log.contains("CRASH_DETECTED participant=cli"), "{log}");
    assert!(
        log.contains("CLEANUP_COMPLETED coordinator=bridge"),
        "{log}"
    );
    let _ = peer.wait().await;
    assert_none_left(&scope.marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_initiator_with_contained_frames_fails_its_operation() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let temps = tempfile::tempdir().unwrap();
    let initiator_temp = temps.path().join("initiator.tmp");
    let survivor_temp = temps.path().join("survivor.tmp");
    std::fs::write(&initiator_temp, "x").unwrap();
    std::fs::write(&survivor_temp, "x").unwrap();
    let id = op_id(&scope);
    // The initiator: a contained call and a contained exec worker with two grandchildren.
    let mut peer = Peer::start(
        "create-hang",
        dir.path(),
        &id,
        "cli",
        &[
            "--contained",
            "--temp",
            initiator_temp.to_str().unwrap(),
            "--worker",
            FORK_TREE,
            "--worker-arg",
            "2",
            "--worker-arg",
            "--marker",
            "--worker-arg",
            &scope.marker,
        ],
    );
    assert_eq!(peer.line().await, "ready");
    // The survivor: a contained exec worker of its own and a temp resource.
    let ledger = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("bridge").unwrap())
    })
    .await;
    let op = ledger
        .join_operation(&id, OperationOptions::new())
        .await
        .unwrap();
    op.set_worker_grace(Duration::from_millis(500));
    op.register_temp_resource(&survivor_temp).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let worker = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(HANG).args(["--marker", &scope.marker]))
            .call(tom_dist_ledger::ledger::CallOptions::new().fail_on_crash(false))
            .run(RunOptions::default().on_stdout(move |line| {
                if line == "ready"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            })),
        temps.path().join("result.json"),
    );
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("worker ready in time")
        .expect("worker printed ready");
    assert_eq!(
        marked_pids(&scope.marker).len(),
        5,
        "initiator's worker with two grandchildren, survivor's worker, and the initiator"
    );

    peer.signal(Signal::SIGKILL);
    let info = tokio::time::timeout(Duration::from_secs(20), op.failed())
        .await
        .expect("the survivor sees the operation fail");
    assert!(info.reason.unwrap().contains("initiator `cli` crashed"));
    tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the survivor's worker call ends");
    let store = ledger.store().clone();
    let data = wait_archived(&store, &id).await;
    assert_eq!(data.operation_state, OperationState::Failed);
    assert!(data.call_frames.is_empty());
    assert!(
        !initiator_temp.exists(),
        "the dead initiator's temp resource"
    );
    assert!(!survivor_temp.exists(), "the survivor's own temp resource");
    let _ = peer.wait().await;
    assert_none_left(&scope.marker);
}
