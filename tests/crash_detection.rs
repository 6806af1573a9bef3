//! Crash detection, cleanup coordination and fencing with real processes.

mod common;

use std::time::{Duration, Instant};

use common::crash::{initiator, log, wait_archived, wait_for};
use common::peer::Peer;
use common::process::{TestScope, alive, assert_none_left, marked_pids};
use nix::sys::signal::Signal;
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::OperationOptions;
use tom_dist_ledger::model::{OperationState, ParticipantState};
use tom_dist_ledger::process::{RunOptions, WorkerCommand};

const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_joined_participant_fails_the_operation() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let temps = tempfile::tempdir().unwrap();
    let temp = temps.path().join("peer.tmp");
    std::fs::write(&temp, "x").unwrap();
    let ledger = initiator(dir.path(), |c| c).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let mut peer = Peer::start(
        "hang",
        dir.path(),
        op.operation_id(),
        "bridge",
        &[
            "--temp",
            temp.to_str().unwrap(),
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
    assert_eq!(
        marked_pids(&scope.marker).len(),
        4,
        "peer, worker and two grandchildren"
    );
    let killed = Instant::now();
    peer.signal(Signal::SIGKILL);
    let info = tokio::time::timeout(Duration::from_secs(20), op.failed())
        .await
        .expect("failed() fires");
    let latency = killed.elapsed();
    assert!(
        latency < Duration::from_secs(5),
        "detected after {latency:?}"
    );
    assert!(
        info.reason
            .unwrap()
            .contains("participant `bridge` crashed")
    );
    assert_eq!(
        info.crashed_call_ids.len(),
        2,
        "the peer's call and its exec worker's call"
    );
    let store = ledger.store().clone();
    let data = wait_archived(&store, op.operation_id()).await;
    assert_eq!(data.operation_state, OperationState::Failed);
    assert_eq!(
        data.participants[&ParticipantId::parse("bridge").unwrap()].state,
        ParticipantState::Crashed
    );
    assert!(
        !temp.exists(),
        "the dead participant's temp resource is deleted"
    );
    assert_none_left(&scope.marker);
    let log = log(&store, op.operation_id()).await;
    assert!(log.contains("CRASH_DETECTED participant=bridge"), "{log}");
    assert!(log.contains("CLEANUP_COMPLETED coordinator=cli"), "{log}");
    let _ = peer.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contained_crash_keeps_the_operation_running() {
    let dir = tempfile::tempdir().unwrap();
    let temps = tempfile::tempdir().unwrap();
    let temp = temps.path().join("optional.tmp");
    std::fs::write(&temp, "x").unwrap();
    let ledger = initiator(dir.path(), |c| c).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let mut peer = Peer::start(
        "hang",
        dir.path(),
        op.operation_id(),
        "optional",
        &["--contained", "--temp", temp.to_str().unwrap()],
    );
    assert_eq!(peer.line().await, "ready");
    peer.signal(Signal::SIGKILL);
    let store = ledger.store().clone();
    let id = op.operation_id().clone();
    let who = ParticipantId::parse("optional").unwrap();
    wait_for("the crash to be contained", || async {
        store
            .read(&id)
            .await
            .is_ok_and(|d| d.participants[&who].state == ParticipantState::Crashed)
    })
    .await;
    let data = store.read(&id).await.unwrap();
    assert_eq!(data.operation_state, OperationState::Running);
    assert!(
        data.call_frames.is_empty(),
        "only the dead participant's call failed"
    );
    wait_for("its temp resource deleted", || async { !temp.exists() }).await;
    assert!(op.failure().is_none());
    assert!(
        log(&store, &id)
            .await
            .contains("CRASH_CONTAINED participant=optional")
    );
    let _ = peer.wait().await;
    op.complete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_participant_is_fenced_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = initiator(dir.path(), |c| {
        c.heartbeat_interval(Duration::from_millis(100))
            .heartbeat_jitter(Duration::ZERO)
            .stale_threshold(Duration::from_millis(1000))
    })
    .await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let mut peer = Peer::start(
        "hang",
        dir.path(),
        op.operation_id(),
        "sleepy",
        &["--contained", "--stale-ms", "1000", "--worker", HANG],
    );
    assert_eq!(peer.line().await, "ready");
    let store = ledger.store().clone();
    let id = op.operation_id().clone();
    let who = ParticipantId::parse("sleepy").unwrap();
    let worker_pid = store
        .read(&id)
        .await
        .unwrap()
        .call_frames
        .iter()
        .find_map(|f| f.process.as_ref().map(|p| p.pid))
        .expect("worker recorded");
    assert!(alive(worker_pid));
    // The peer is idle now (its heartbeat is an hour away): stop it.
    peer.stop_outside_lock().await;
    wait_for("the stale participant to be declared crashed", || async {
        store
            .read(&id)
            .await
            .is_ok_and(|d| d.participants[&who].state == ParticipantState::Crashed)
    })
    .await;
    // Its recorded worker is stopped by the detector while it sleeps.
    wait_for("its worker stopped", || async { !alive(worker_pid) }).await;
    peer.signal(Signal::SIGCONT);
    assert_eq!(peer.line().await, "fenced");
    let status = peer.wait().await;
    assert_eq!(status.code(), Some(3));
    let data = store.read(&id).await.unwrap();
    assert_eq!(
        data.operation_state,
        OperationState::Running,
        "contained: the operation goes on"
    );
    assert!(
        data.call_frames.iter().all(|f| f.participant_id != who),
        "its late writes were refused"
    );
    op.complete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_during_cleanup_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = initiator(dir.path(), |c| c).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    // A participant that holds up the cleanup: alive but stopped.
    let mut blocker = Peer::start("hang", dir.path(), op.operation_id(), "blocker", &[]);
    assert_eq!(blocker.line().await, "ready");
    blocker.stop_outside_lock().await;
    let mut coordinator = Peer::start(
        "fail-and-hang",
        dir.path(),
        op.operation_id(),
        "coord",
        &["--cleanup-wait-ms", "600000"],
    );
    assert_eq!(coordinator.line().await, "ready");
    let store = ledger.store().clone();
    let id = op.operation_id().clone();
    wait_for("the peer to coordinate", || async {
        store.read(&id).await.is_ok_and(|d| {
            d.operation_state == OperationState::Cleanup
                && d.failure
                    .as_ref()
                    .and_then(|f| f.coordinator.as_ref())
                    .map(|c| c.as_str())
                    == Some("coord")
        })
    })
    .await;
    coordinator.signal(Signal::SIGKILL);
    let data = wait_archived(&store, &id).await;
    assert_eq!(data.operation_state, OperationState::Failed);
    let failure = data.failure.unwrap();
    assert_eq!(
        failure.coordinator.unwrap().as_str(),
        "cli",
        "the initiator took over"
    );
    let log = log(&store, &id).await;
    assert!(log.contains("CRASH_DETECTED participant=coord"), "{log}");
    assert!(log.contains("CLEANUP_COMPLETED coordinator=cli"), "{log}");
    blocker.signal(Signal::SIGCONT);
    blocker.signal(Signal::SIGKILL);
    let _ = blocker.wait().await;
    let _ = coordinator.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_participant_started_by_an_exec_worker_is_reported_to_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = initiator(dir.path(), |c| c).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let call = op.exec_file_result_worker::<serde_json::Value>(
        tom_dist_ledger::ledger::ExecWorker::new(
            WorkerCommand::new(common::peer::PEER)
                .args([
                    "hang",
                    "--ledger",
                    dir.path().to_str().unwrap(),
                    "--op",
                    op.operation_id().as_str(),
                ])
                .args(["--participant", "nested"]),
        )
        .call(tom_dist_ledger::ledger::CallOptions::new().fail_on_crash(false))
        .run(RunOptions::default().on_stdout(move |line| {
            if line == "ready"
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        })),
        dir.path().join("never.json"),
    );
    tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .unwrap()
        .unwrap();
    let store = ledger.store().clone();
    let nested = ParticipantId::parse("nested").unwrap();
    let data = store.read(op.operation_id()).await.unwrap();
    let record = &data.participants[&nested];
    assert_eq!(
        record.spawned_by.as_ref(),
        Some(call.call_id()),
        "joined with TOM_LEDGER_CALL"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(record.pid), Signal::SIGKILL).unwrap();
    let err = call.join().await.unwrap_err().to_string();
    assert!(
        err.contains("participant `nested` started by this call crashed"),
        "{err}"
    );
    let id = op.operation_id().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store
        .read(&id)
        .await
        .is_ok_and(|d| d.participants[&nested].state == ParticipantState::Crashed)
    {
        if Instant::now() > deadline {
            panic!(
                "not declared crashed: {:#?}\n{}",
                store.read(&id).await,
                log(&store, &id).await
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let data = store.read(&id).await.unwrap();
    assert_eq!(
        data.operation_state,
        OperationState::Running,
        "the call's fail_on_crash decided"
    );
    assert!(data.call_frames.is_empty());
    // The line is written after the declaration is.
    while !log(&store, &id)
        .await
        .contains("CRASH_CONTAINED participant=nested")
    {
        assert!(
            Instant::now() < deadline,
            "no CRASH_CONTAINED line:\n{}",
            log(&store, &id).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    op.complete().await.unwrap();
}
