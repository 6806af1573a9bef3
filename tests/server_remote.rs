//! Participants in their own processes sharing an operation through a real
//! `tom-ledger serve`: a SIGKILLed remote participant fails the operation, an abort from
//! another client is pushed to a remote participant, and a server killed and restarted
//! in the middle of an operation loses nothing.

mod common;

use std::time::{Duration, Instant};

use common::crash::{log, wait_archived};
use common::peer::Peer;
use common::process::{TestScope, assert_none_left, marked_pids};
use common::server::ServerProcess;
use nix::sys::signal::Signal;
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{CallOptions, Connect, Ledger, OperationOptions};
use tom_dist_ledger::model::{OperationState, ParticipantState};

const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");

/// The stale threshold of these tests' participants.
const STALE: Duration = Duration::from_secs(3);

async fn client(server: &ServerProcess, participant: &str) -> Ledger {
    let connect = Connect::remote(&server.url)
        .token(&server.token)
        .participant(ParticipantId::parse(participant).unwrap())
        .heartbeat_interval(Duration::from_millis(500))
        .stale_threshold(STALE)
        .cleanup_wait(Duration::from_secs(5));
    Ledger::connect(connect).await.unwrap()
}

/// The arguments that make a peer join through `server`.
fn through(server: &ServerProcess) -> std::path::PathBuf {
    std::path::PathBuf::from(&server.url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_remote_participant_fails_the_operation_within_the_bound() {
    let scope = TestScope::new();
    let server = ServerProcess::start();
    let temps = tempfile::tempdir().unwrap();
    let temp = temps.path().join("peer.tmp");
    std::fs::write(&temp, "x").unwrap();
    let ledger = client(&server, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let mut peer = Peer::start(
        "hang",
        &through(&server),
        op.operation_id(),
        "remote",
        &[
            "--token",
            &server.token,
            "--hb-ms",
            "500",
            "--stale-ms",
            "3000",
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
    let info = tokio::time::timeout(Duration::from_secs(30), op.failed())
        .await
        .expect("failed() fires");
    let latency = killed.elapsed();
    // The bound: the stale threshold + 1 s, with room for a loaded machine.
    assert!(
        latency < STALE + Duration::from_secs(3),
        "detected after {latency:?}"
    );
    assert!(
        info.reason
            .unwrap()
            .contains("participant `remote` crashed"),
        "the reason names the participant"
    );
    let store = ledger.store().clone();
    let data = wait_archived(&store, op.operation_id()).await;
    assert_eq!(data.operation_state, OperationState::Failed);
    assert_eq!(
        data.participants[&ParticipantId::parse("remote").unwrap()].state,
        ParticipantState::Crashed
    );
    assert!(
        !temp.exists(),
        "the dead participant's temp resource is deleted"
    );
    assert_none_left(&scope.marker);
    let log = log(&store, op.operation_id()).await;
    assert!(log.contains("CRASH_DETECTED participant=remote"), "{log}");
    assert!(log.contains("CLEANUP_COMPLETED coordinator=cli"), "{log}");
    let _ = peer.wait().await;
    ledger.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_from_another_client_is_pushed_to_a_remote_participant() {
    let _scope = TestScope::new();
    let server = ServerProcess::start();
    // Heartbeats an hour apart: only the push can bring the abort in time.
    let slow = |c: Connect| c.heartbeat_interval(Duration::from_secs(3600));
    let connect = |p: &str| {
        slow(Connect::remote(&server.url).token(&server.token))
            .participant(ParticipantId::parse(p).unwrap())
    };
    let initiator = Ledger::connect(connect("cli")).await.unwrap();
    let op = initiator
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let mut peer = Peer::start(
        "wait-abort",
        &through(&server),
        op.operation_id(),
        "remote",
        &["--token", &server.token],
    );
    assert_eq!(peer.line().await, "ready");
    let other = Ledger::connect(connect("outsider")).await.unwrap();
    let sent = Instant::now();
    other.abort_operation(op.operation_id()).await.unwrap();
    let line = peer.line().await;
    let latency = sent.elapsed();
    assert!(line.starts_with("aborted "), "{line}");
    assert!(
        latency < Duration::from_secs(10),
        "abort reached after {latency:?}"
    );
    let _ = peer.wait().await;
    op.complete().await.unwrap();
    initiator.dispose().await;
    other.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_operation_loses_nothing() {
    let _scope = TestScope::new();
    let mut server = ServerProcess::start();
    let ledger = client(&server, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new().description("survives a restart"))
        .await
        .unwrap();
    let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
    let id = op.operation_id().clone();
    server.restart();
    // The same operation, the call still open, the client reconnected.
    let store = ledger.store().clone();
    let data = store.read(&id).await.unwrap();
    assert_eq!(data.call_frames.len(), 1);
    assert_eq!(data.description.as_deref(), Some("survives a restart"));
    call.end(()).await.unwrap();
    let second = op.start_call::<()>(CallOptions::new()).await.unwrap();
    second.end(()).await.unwrap();
    // The abort reaches a participant whose watch went through the restart.
    let joined = client(&server, "peer").await;
    let peer_op = joined
        .join_operation(&id, OperationOptions::new())
        .await
        .unwrap();
    server.restart();
    op.set_abort_flag(true).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), peer_op.aborted())
        .await
        .expect("the abort reaches the participant after the restart");
    peer_op.set_abort_flag(false).await.unwrap();
    peer_op.leave(false).await.unwrap();
    op.complete().await.unwrap();
    let archived = store.read_archived(&id).await.unwrap();
    assert_eq!(archived.operation_state, OperationState::Completed);
    let log = log(&store, &id).await;
    assert_eq!(log.matches("CALL_STARTED").count(), 2, "{log}");
    ledger.dispose().await;
    joined.dispose().await;
}

/// A server that is down for longer than the stale threshold: the participants'
/// heartbeats report an error within the request deadline (no hang, no crash of the
/// operation), and go on once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_report_a_server_that_is_down_and_recover() {
    let _scope = TestScope::new();
    let mut server = ServerProcess::start();
    let ledger = client(&server, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let peer = client(&server, "peer").await;
    let joined = peer
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    server.kill();
    let since = Instant::now();
    let error = op.heartbeat().await.expect_err("no server, no beat");
    let took = since.elapsed();
    assert!(took < Duration::from_secs(15), "a beat hung for {took:?}");
    assert!(
        matches!(error, tom_dist_ledger::Error::Unavailable { .. }),
        "{error}"
    );
    // Down for longer than the stale threshold.
    tokio::time::sleep(STALE + Duration::from_secs(1)).await;
    server.restart();
    let result = op.heartbeat().await.unwrap();
    assert!(result.stale_participants.is_empty(), "{result:?}");
    assert!(!op.is_aborted());
    joined.leave(false).await.unwrap();
    op.complete().await.unwrap();
    let store = ledger.store().clone();
    let archived = store.read_archived(op.operation_id()).await.unwrap();
    assert_eq!(archived.operation_state, OperationState::Completed);
    ledger.dispose().await;
    peer.dispose().await;
}
