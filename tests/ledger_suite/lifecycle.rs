//! Creating, joining, leaving and completing operations; logs, state, temp resources.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tom_dist_ledger::ledger::{CallOptions, LedgerCallback, OperationCallback, OperationOptions};
use tom_dist_ledger::model::{OperationState, ParticipantState};
use tom_dist_ledger::store::LogKind;
use tom_dist_ledger::{Error, LogLevel, OperationId};

use super::{Backend, connect, connect_with, log_of, wait_until};

pub async fn create_registers_initiator(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new().description("Build project"))
        .await
        .unwrap();
    assert!(op.is_initiator());
    assert_eq!(op.participant_id().as_str(), "cli");
    assert!(op.operation_id().as_str().contains("-cli-"));
    assert!(!op.operation_id().as_str().contains(':'));
    let data = ledger.store().read(op.operation_id()).await.unwrap();
    assert_eq!(data.operation_id, *op.operation_id());
    assert_eq!(data.initiator_id.as_str(), "cli");
    assert!(data.call_frames.is_empty());
    assert_eq!(data.operation_state, OperationState::Running);
    assert_eq!(data.description.as_deref(), Some("Build project"));
    let me = &data.participants[op.participant_id()];
    assert_eq!(me.epoch, 1);
    assert_eq!(me.pid, std::process::id() as i32);
    assert_eq!(me.state, ParticipantState::Active);
    assert!(
        log_of(&ledger, op.operation_id())
            .await
            .contains("OPERATION_CREATED initiator=cli")
    );
    op.complete().await.unwrap();
}

pub async fn join_registers_a_second_participant(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let bridge = connect(b, "bridge").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let joined = bridge
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    assert!(!joined.is_initiator());
    assert_eq!(joined.epoch(), 2);
    let cached = joined.cached_data().expect("cached after join");
    assert_eq!(cached.operation_id, *op.operation_id());
    assert!(cached.participants.contains_key(joined.participant_id()));
    assert!(
        log_of(&cli, op.operation_id())
            .await
            .contains("PARTICIPANT_JOINED participant=bridge")
    );
    joined.leave(false).await.unwrap();
    // Left in order with nothing behind: dropped from the registry, counted, remembered.
    let data = cli.store().read(op.operation_id()).await.unwrap();
    assert!(!data.participants.contains_key(joined.participant_id()));
    assert_eq!(data.participants_left, 1);
    assert_eq!(&data.recently_left[0].id, joined.participant_id());
    assert!(
        log_of(&cli, op.operation_id())
            .await
            .contains("PARTICIPANT_LEFT participant=bridge")
    );
    op.complete().await.unwrap();
}

pub async fn join_unknown_operation_fails(b: &dyn Backend) {
    let ledger = connect(b, "w").await;
    let missing = OperationId::parse("no-such-op").unwrap();
    let err = ledger
        .join_operation(&missing, OperationOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OperationNotFound(_)), "{err}");
    assert_eq!(err.to_string(), "operation `no-such-op` not found");
}

pub async fn join_refuses_an_id_held_by_another_live_process(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let first = connect(b, "worker").await;
    let session = first
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    // Another process (here a live child) claims the same participant id.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let impostor = connect_with(b, "worker", |c| c.pid(other.id() as i32)).await;
    let err = impostor
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap_err();
    let _ = other.kill();
    let _ = other.wait();
    assert!(matches!(err, Error::ParticipantInUse { .. }), "{err}");
    assert!(err.to_string().contains("already held by live process"));
    session.leave(false).await.unwrap();
    op.complete().await.unwrap();
}

pub async fn join_takes_over_an_id_whose_holder_is_dead(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    // The id is held by a process that has exited (a reaped child's pid).
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id() as i32;
    gone.wait().unwrap();
    let ghost = connect_with(b, "worker", |c| c.pid(dead_pid)).await;
    let stale = ghost
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let heir = connect(b, "worker").await;
    let session = heir
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .expect("a dead holder does not keep the id");
    assert!(
        session.epoch() > stale.epoch(),
        "a new epoch fences the old one"
    );
    let refused = stale.set_abort_flag(true).await.unwrap_err();
    assert!(matches!(refused, Error::Fenced { .. }), "{refused}");
    session.leave(false).await.unwrap();
    let _ = stale.leave(false).await;
    op.complete().await.unwrap();
}

pub async fn sessions_are_separate(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let worker = connect(b, "w").await;
    let s1 = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let s2 = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    assert_ne!(s1.session_id(), s2.session_id());
    assert_eq!(s1.epoch(), s2.epoch(), "one registration per participant");
    let c1 = s1.start_call::<()>(CallOptions::new()).await.unwrap();
    assert_eq!(s1.pending_calls(), vec![c1.call_id().clone()]);
    assert!(s2.pending_calls().is_empty());
    assert!(!s2.has_pending_calls());
    s2.leave(false).await.unwrap();
    // The participant is still in: s1 is open.
    let data = cli.store().read(op.operation_id()).await.unwrap();
    assert_eq!(
        data.participants[s1.participant_id()].state,
        ParticipantState::Active
    );
    c1.end(()).await.unwrap();
    s1.leave(false).await.unwrap();
    op.complete().await.unwrap();
}

pub async fn complete_archives_with_state_completed(b: &dyn Backend) {
    let archived = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = archived.clone();
    let ledger = connect_with(b, "cli", |c| {
        c.callback(
            LedgerCallback::new()
                .on_backup_created(move |p| seen.lock().unwrap().push(p.to_string())),
        )
    })
    .await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
    call.end(()).await.unwrap();
    let id = op.operation_id().clone();
    op.complete().await.unwrap();
    let err = ledger.store().read(&id).await.unwrap_err();
    assert!(matches!(err, Error::OperationNotFound(_)));
    let final_data = ledger.store().read_archived(&id).await.unwrap();
    assert_eq!(final_data.operation_state, OperationState::Completed);
    assert!(log_of(&ledger, &id).await.contains("OPERATION_COMPLETED"));
    assert_eq!(archived.lock().unwrap().len(), 1);
}

pub async fn complete_refuses_non_initiator_and_open_calls(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let worker = connect(b, "w").await;
    let joined = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let err = joined.complete().await.unwrap_err();
    assert!(matches!(err, Error::NotInitiator { .. }), "{err}");
    let call = joined.start_call::<()>(CallOptions::new()).await.unwrap();
    let err = op.complete().await.unwrap_err();
    assert!(matches!(err, Error::OpenCalls { .. }), "{err}");
    assert!(err.to_string().contains(call.call_id().as_str()));
    assert_eq!(op.operation_state().await.unwrap(), OperationState::Running);
    call.end(()).await.unwrap();
    op.complete().await.unwrap();
    let _ = joined.leave(false).await;
}

pub async fn leave_checks_pending_calls(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let worker = connect(b, "w").await;
    let s = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let call = s.start_call::<()>(CallOptions::new()).await.unwrap();
    let err = s.leave(false).await.unwrap_err();
    assert!(matches!(err, Error::PendingCalls { .. }), "{err}");
    assert!(err.to_string().contains(call.call_id().as_str()));
    call.end(()).await.unwrap();
    s.leave(false).await.unwrap();
    op.complete().await.unwrap();
}

pub async fn leave_twice_fails(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let worker = connect(b, "w").await;
    let s = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    s.leave(false).await.unwrap();
    let err = s.leave(false).await.unwrap_err();
    assert!(matches!(err, Error::SessionClosed { .. }), "{err}");
    op.complete().await.unwrap();
}

pub async fn logs_levels_and_debug_log(b: &dyn Backend) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let ledger = connect_with(b, "cli", |c| {
        c.callback(
            LedgerCallback::new().on_log_line(move |l| seen.lock().unwrap().push(l.to_string())),
        )
    })
    .await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    op.log("first entry", LogLevel::Info).await.unwrap();
    op.log("careful", LogLevel::Warning).await.unwrap();
    op.log("broken", LogLevel::Error).await.unwrap();
    op.log_message(2, "nested").await.unwrap();
    op.debug_log("only in debug").await.unwrap();
    let log = log_of(&ledger, op.operation_id()).await;
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("OPERATION_CREATED"))
        .collect();
    assert!(ours[0].ends_with(" [INFO] first entry"), "{}", ours[0]);
    assert!(
        ours[0].starts_with("20") && ours[0].contains("Z [INFO]"),
        "RFC3339 UTC: {}",
        ours[0]
    );
    assert!(ours[1].ends_with("[WARNING] careful"));
    assert!(ours[2].ends_with("[ERROR] broken"));
    assert!(ours[3].contains(" |         [cli] nested"), "{}", ours[3]);
    assert!(!log.contains("only in debug"));
    let debug = ledger
        .store()
        .read_log(
            op.operation_id(),
            LogKind::Debug,
            tom_dist_ledger::store::LogCursor::START,
        )
        .await
        .unwrap()
        .0;
    assert!(debug.trim_end().ends_with("Z only in debug"), "{debug}");
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.ends_with("[ERROR] broken"))
    );
    op.complete().await.unwrap();
}

pub async fn operation_state_get_and_set(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    assert_eq!(op.operation_state().await.unwrap(), OperationState::Running);
    op.set_operation_state(OperationState::Cleanup)
        .await
        .unwrap();
    assert_eq!(op.operation_state().await.unwrap(), OperationState::Cleanup);
    assert!(
        log_of(&ledger, op.operation_id())
            .await
            .contains("OPERATION_STATE_CHANGED state=cleanup")
    );
    op.set_operation_state(OperationState::Running)
        .await
        .unwrap();
    op.complete().await.unwrap();
}

pub async fn temp_resources_register_and_unregister(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.tmp");
    let bb = dir.path().join("b.tmp");
    op.register_temp_resource(&a).await.unwrap();
    op.register_temp_resource(&bb).await.unwrap();
    op.register_temp_resource(&a).await.unwrap();
    let data = ledger.store().read(op.operation_id()).await.unwrap();
    assert_eq!(data.temp_resources.len(), 2);
    assert_eq!(data.temp_resources[0].owner, std::process::id() as i64);
    assert_eq!(
        data.temp_resources[0].owner_id.as_ref().unwrap().as_str(),
        "cli"
    );
    assert_eq!(op.local_temp_resources().len(), 2);
    op.unregister_temp_resource(&a).await.unwrap();
    let data = ledger.store().read(op.operation_id()).await.unwrap();
    assert_eq!(data.temp_resources.len(), 1);
    assert_eq!(data.temp_resources[0].path, bb.to_string_lossy());
    assert_eq!(op.local_temp_resources(), vec![bb.clone()]);
    op.complete().await.unwrap();
}

pub async fn list_operations_shows_live_and_archived(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let live = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let done = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let done_id = done.operation_id().clone();
    done.complete().await.unwrap();
    let list = ledger.list_operations().await.unwrap();
    let live_row = list
        .iter()
        .find(|s| &s.operation_id == live.operation_id())
        .unwrap();
    assert!(!live_row.archived);
    assert_eq!(live_row.state, OperationState::Running);
    assert_eq!(live_row.participants, 1);
    let done_row = list.iter().find(|s| s.operation_id == done_id).unwrap();
    assert!(done_row.archived);
    assert_eq!(done_row.state, OperationState::Completed);
    live.complete().await.unwrap();
}

pub async fn start_time_and_elapsed(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let iso = op.start_time_iso();
    assert!(iso.ends_with('Z'), "{iso}");
    assert_eq!(op.start_time().timestamp_millis(), op.start_time_ms());
    let formatted = op.elapsed_formatted();
    assert_eq!(formatted.len(), 7, "{formatted}");
    assert_eq!(&formatted[3..4], ".");
    assert!(op.elapsed() < Duration::from_secs(60));
    op.complete().await.unwrap();
}

/// Once `dispose` returns no beat is in flight and none follows: the disposed
/// participant's beat count stays put while a second participant, beating on the same
/// interval, beats ten more times. Counted through the heartbeat callback, so it holds
/// whether a beat rewrites the document (file, memory) or not (a server, etcd).
pub async fn dispose_stops_heartbeats(b: &dyn Backend) {
    let fast = |c: tom_dist_ledger::Connect| {
        c.heartbeat_interval(Duration::from_millis(20))
            .heartbeat_jitter(Duration::ZERO)
    };
    let ledger = connect_with(b, "cli", fast).await;
    let (callback, beats) = beat_counter();
    let op = ledger
        .create_operation(OperationOptions::new().callback(callback))
        .await
        .unwrap();
    wait_for_beats(&beats, 3, "the participant's beats").await;
    let observer = connect_with(b, "obs", fast).await;
    let (callback, observed) = beat_counter();
    let joined = observer
        .join_operation(
            op.operation_id(),
            OperationOptions::new().callback(callback),
        )
        .await
        .unwrap();
    ledger.dispose().await;
    let last = beats.load(Ordering::SeqCst);
    let seen = observed.load(Ordering::SeqCst);
    wait_for_beats(&observed, seen + 10, "ten more beats of the observer").await;
    assert_eq!(beats.load(Ordering::SeqCst), last, "no beat after dispose");
    joined.leave(false).await.unwrap();
    observer.dispose().await;
}

fn beat_counter() -> (OperationCallback, Arc<AtomicUsize>) {
    let beats = Arc::new(AtomicUsize::new(0));
    let counter = beats.clone();
    let callback = OperationCallback::new().on_heartbeat_success(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (callback, beats)
}

async fn wait_for_beats(beats: &Arc<AtomicUsize>, at_least: usize, what: &str) {
    wait_until(what, || {
        let beats = beats.clone();
        async move { beats.load(Ordering::SeqCst) >= at_least }
    })
    .await;
}
