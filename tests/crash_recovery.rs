//! Recovery of operations whose participants are all dead, with real processes.

mod common;

use std::time::Duration;

use common::crash::{initiator, log};
use common::process::{TestScope, alive, assert_none_left};
use tom_dist_ledger::ledger::{CallOptions, OperationOptions};
use tom_dist_ledger::model::{
    CallFrame, FrameState, LedgerData, OperationState, Participant, ParticipantState, ProcessRecord,
};
use tom_dist_ledger::{OperationId, ParticipantId};

const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const SUPERVISOR: &str = env!("CARGO_BIN_EXE_worker-supervisor");

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
            pid_namespace: tom_dist_ledger::process::pid_namespace(),
            uid: Some(tom_dist_ledger::process::user_id()),
            epoch: 1,
            last_heartbeat: now,
            joined_at: now,
            state: ParticipantState::Active,
            spawned_by: None,
            paused_at: None,
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
            pid_namespace: tom_dist_ledger::process::pid_namespace(),
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
            pid_namespace: tom_dist_ledger::process::pid_namespace(),
            uid: Some(tom_dist_ledger::process::user_id()),
            epoch: 1,
            last_heartbeat: now,
            joined_at: now,
            state: ParticipantState::Left,
            spawned_by: None,
            paused_at: None,
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

const IGNORE_TERM: &str = env!("CARGO_BIN_EXE_worker-ignore-term");

/// A dead participant's operation whose frame records `worker` (pid, start ticks) as
/// leading its own group.
fn operation_with_worker(id: &str, worker: i32) -> LedgerData {
    let ticks: u64 = common::process::stat_field(worker, 22)
        .expect("worker runs")
        .parse()
        .expect("start ticks");
    let now = chrono::Utc::now();
    let ghost = ParticipantId::parse("ghost").unwrap();
    let mut data = LedgerData::new(OperationId::parse(id).unwrap(), ghost.clone(), now);
    // A participant that cannot be running: no process has start time 1 at that pid.
    let mut record = ended_operation(id, OperationState::Running, 9_999_999, 1)
        .participants
        .pop_first()
        .unwrap()
        .1;
    record.state = ParticipantState::Active;
    data.participants.insert(ghost.clone(), record);
    data.call_frames.push(CallFrame {
        participant_id: ghost,
        call_id: tom_dist_ledger::CallId::parse("call_ghost_1_0001").unwrap(),
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
            pid: worker,
            pgid: worker,
            start_ticks: ticks,
            boot_id: tom_dist_ledger::process::boot_id().map(str::to_owned),
            pid_namespace: tom_dist_ledger::process::pid_namespace(),
            command: vec![IGNORE_TERM.into()],
            cgroup: None,
        }),
    });
    data
}

/// A worker that ignores SIGTERM, leading its own process group, once it says `ready`.
async fn term_ignoring_worker(marker: &str) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(IGNORE_TERM);
    cmd.args(["--marker", marker])
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("worker ready in time")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_stops_workers_with_the_configured_grace() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let mut worker = term_ignoring_worker(&scope.marker).await;
    let pid = worker.id().unwrap() as i32;
    let patient = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("recover").unwrap())
            .worker_grace(Duration::from_secs(600))
    })
    .await;
    let data = operation_with_worker("op-patient", pid);
    patient.store().create(&data).await.unwrap();
    let mut recovery = tokio::spawn(async move { patient.recover().await });
    // Past the default grace (5 s), recovery still gives the worker its 600 s.
    let early = tokio::time::timeout(Duration::from_secs(8), &mut recovery).await;
    assert!(
        early.is_err(),
        "recovery ended within the default grace: {early:?}"
    );
    assert!(
        alive(pid),
        "the worker is not killed before the grace is over"
    );
    // The worker ends: the grace ends with it and recovery finishes.
    worker.kill().await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), recovery)
        .await
        .expect("recovery ends once the worker is gone")
        .unwrap()
        .unwrap();
    assert_eq!(report.recovered.len(), 1);

    // A short grace: the worker that ignores SIGTERM is killed after it.
    let mut worker = term_ignoring_worker(&scope.marker).await;
    let pid = worker.id().unwrap() as i32;
    let brisk = initiator(dir.path(), |c| {
        c.participant(ParticipantId::parse("recover").unwrap())
            .worker_grace(Duration::from_millis(50))
    })
    .await;
    brisk
        .store()
        .create(&operation_with_worker("op-brisk", pid))
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), brisk.recover())
        .await
        .expect("recovery ends")
        .unwrap();
    assert_eq!(report.recovered.len(), 1);
    assert_eq!(report.recovered[0].stopped_workers, 1);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("worker reaped")
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed after the grace"
    );
    scope.assert_clean();
}
