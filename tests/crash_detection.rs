//! Crash detection, cleanup coordination, fencing and recovery with real processes.

mod common;

use std::time::{Duration, Instant};

use common::peer::Peer;
use common::process::{TestScope, alive, assert_none_left, marked_pids};
use nix::sys::signal::Signal;
use tom_dist_ledger::ledger::{CallOptions, Connect, Ledger, OperationOptions};
use tom_dist_ledger::model::{
    CallFrame, FrameState, LedgerData, OperationState, Participant, ParticipantState, ProcessRecord,
};
use tom_dist_ledger::store::{LogKind, Store};
use tom_dist_ledger::{OperationId, ParticipantId};

const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const SUPERVISOR: &str = env!("CARGO_BIN_EXE_worker-supervisor");

async fn initiator(dir: &std::path::Path, tweak: impl FnOnce(Connect) -> Connect) -> Ledger {
    let connect = Connect::local(dir)
        .participant(ParticipantId::parse("cli").unwrap())
        .heartbeat_interval(Duration::from_secs(3600))
        .cleanup_wait(Duration::from_secs(5))
        .handle_signals(false);
    Ledger::connect(tweak(connect)).await.unwrap()
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_archived(store: &std::sync::Arc<dyn Store>, op: &OperationId) -> LedgerData {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.read_archived(op).await.is_err() {
        if Instant::now() > deadline {
            let data = store.read(op).await;
            panic!(
                "not archived after 30 s; ledger: {data:#?}\nlog:\n{}",
                log(store, op).await
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.read_archived(op).await.unwrap()
}

async fn log(store: &std::sync::Arc<dyn Store>, op: &OperationId) -> String {
    store.read_log(op, LogKind::Main, 0).await.unwrap().0
}

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
    peer.signal(Signal::SIGSTOP);
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
    blocker.signal(Signal::SIGSTOP);
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
async fn killed_supervisor_is_recovered() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let temps = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(SUPERVISOR)
        .args([
            "--ledger",
            dir.path().to_str().unwrap(),
            "--fork-tree",
            FORK_TREE,
        ])
        .args([
            "--temp-dir",
            temps.path().to_str().unwrap(),
            "--workers",
            "3",
            "--tree",
            "2",
        ])
        .args(["--marker", &scope.marker])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let id = OperationId::parse(ready.strip_prefix("ready ").unwrap()).unwrap();
    child.kill().await.unwrap();
    // The workers die with their parent; their grandchildren stay behind in the groups.
    let ledger = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("recover").unwrap())
    })
    .await;
    assert_eq!(
        ledger.abandoned_operations().await.unwrap(),
        vec![id.clone()]
    );
    let report = ledger.recover().await.unwrap();
    assert_eq!(report.recovered.len(), 1);
    let recovered = &report.recovered[0];
    assert_eq!(recovered.operation_id, id);
    assert_eq!(
        recovered.dead_participants,
        vec![ParticipantId::parse("supervisor").unwrap()]
    );
    assert_eq!(recovered.deleted_temp_resources.len(), 3);
    assert_none_left(&scope.marker);
    assert_eq!(
        std::fs::read_dir(temps.path()).unwrap().count(),
        0,
        "no temp file left"
    );
    let data = ledger.store().read_archived(&id).await.unwrap();
    assert_eq!(data.operation_state, OperationState::Failed);
    assert!(
        log(ledger.store(), &id)
            .await
            .contains("RECOVERED by=recover")
    );
    // Nothing left to recover.
    assert!(ledger.recover().await.unwrap().recovered.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_with_another_start_time_is_never_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("recover").unwrap())
    })
    .await;
    // A live process in its own group, recorded with the wrong start time.
    let mut bystander = std::process::Command::new("sleep");
    std::os::unix::process::CommandExt::process_group(&mut bystander, 0);
    let mut bystander = bystander.arg("60").spawn().unwrap();
    let pid = bystander.id() as i32;
    let ticks: u64 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let now = chrono::Utc::now();
    let ghost = ParticipantId::parse("ghost").unwrap();
    let id = OperationId::parse("op-with-a-ghost").unwrap();
    let mut data = LedgerData::new(id.clone(), ghost.clone(), now);
    data.participants.insert(
        ghost.clone(),
        Participant {
            pid: 9_999_999,
            start_ticks: Some(1),
            host: tom_dist_ledger::process::hostname(),
            boot_id: tom_dist_ledger::process::boot_id().map(str::to_owned),
            epoch: 1,
            last_heartbeat: now,
            joined_at: now,
            state: ParticipantState::Active,
            spawned_by: None,
        },
    );
    data.call_frames.push(CallFrame {
        participant_id: ghost.clone(),
        call_id: tom_dist_ledger::CallId::parse("call_ghost_1_0000").unwrap(),
        pid: 9_999_999,
        start_time: now,
        last_heartbeat: now,
        state: FrameState::Active,
        description: None,
        resources: vec![],
        fail_on_crash: true,
        session_id: None,
        parent_call_id: None,
        process: Some(ProcessRecord {
            pid,
            pgid: pid,
            start_ticks: ticks + 1,
            boot_id: tom_dist_ledger::process::boot_id().map(str::to_owned),
            command: vec!["sleep".into(), "60".into()],
            cgroup: None,
        }),
    });
    ledger.store().create(&data).await.unwrap();
    let report = ledger.recover().await.unwrap();
    assert_eq!(report.recovered.len(), 1);
    assert_eq!(report.recovered[0].stopped_workers, 0);
    assert!(
        alive(pid),
        "a process that merely reused the pid is left alone"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_operation_is_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = initiator(dir.path(), |c| c).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
    let other = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("recover").unwrap())
    })
    .await;
    assert!(other.abandoned_operations().await.unwrap().is_empty());
    assert!(other.recover().await.unwrap().recovered.is_empty());
    call.end(()).await.unwrap();
    op.complete().await.unwrap();
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
        tom_dist_ledger::ledger::ExecWorker::new(common::peer::PEER)
            .args([
                "hang",
                "--ledger",
                dir.path().to_str().unwrap(),
                "--op",
                op.operation_id().as_str(),
            ])
            .args(["--participant", "nested"])
            .fail_on_crash(false)
            .on_stdout(move |line| {
                if line == "ready"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }),
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
    assert!(
        log(&store, &id)
            .await
            .contains("CRASH_CONTAINED participant=nested")
    );
    op.complete().await.unwrap();
}

/// An operation in `state` whose only participant is the process `pid` (started at
/// `start_ticks`), which has left it without archiving it yet.
fn ended_operation(id: &str, state: OperationState, pid: i32, start_ticks: u64) -> LedgerData {
    let now = chrono::Utc::now();
    let owner = ParticipantId::parse("owner").unwrap();
    let mut data = LedgerData::new(OperationId::parse(id).unwrap(), owner.clone(), now);
    data.operation_state = state;
    data.participants.insert(
        owner,
        Participant {
            pid,
            start_ticks: Some(start_ticks),
            host: tom_dist_ledger::process::hostname(),
            boot_id: tom_dist_ledger::process::boot_id().map(str::to_owned),
            epoch: 1,
            last_heartbeat: now,
            joined_at: now,
            state: ParticipantState::Left,
            spawned_by: None,
        },
    );
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_operation_is_left_to_its_running_owner_to_archive() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("recover").unwrap())
    })
    .await;
    let me = tom_dist_ledger::process::ProcessIdentity::current().unwrap();
    // Completed by a process that still runs: it archives it next, recovery keeps off.
    let mine = ended_operation(
        "ended-by-a-live-process",
        OperationState::Completed,
        me.pid,
        me.start_ticks,
    );
    ledger.store().create(&mine).await.unwrap();
    // Completed by a process that has gone since: nobody else will archive it.
    let gone = ended_operation(
        "ended-by-a-dead-process",
        OperationState::Completed,
        me.pid,
        me.start_ticks + 1,
    );
    ledger.store().create(&gone).await.unwrap();
    assert_eq!(
        ledger.abandoned_operations().await.unwrap(),
        vec![gone.operation_id.clone()]
    );
    let report = ledger.recover().await.unwrap();
    assert_eq!(report.recovered.len(), 1);
    assert_eq!(report.recovered[0].operation_id, gone.operation_id);
    let archived = ledger
        .store()
        .read_archived(&gone.operation_id)
        .await
        .unwrap();
    assert_eq!(
        archived.operation_state,
        OperationState::Completed,
        "an ended operation keeps its state"
    );
    assert_eq!(
        ledger
            .store()
            .read(&mine.operation_id)
            .await
            .unwrap()
            .operation_state,
        OperationState::Completed
    );
}
