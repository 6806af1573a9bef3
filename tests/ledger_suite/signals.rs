//! Abort, heartbeats, staleness, fencing, corrupt files, failure cleanup.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tom_dist_ledger::Error;
use tom_dist_ledger::clock::{SharedClock, SystemClock};
use tom_dist_ledger::ledger::{
    CallOptions, HeartbeatErrorType, HeartbeatOptions, OperationCallback, OperationOptions,
};
use tom_dist_ledger::model::{OperationState, ParticipantState};

use super::{Backend, connect, connect_with, create_and_beat, log_of, registered, wait_until};

pub async fn abort_flag_set_clear_and_check(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    assert!(!op.check_abort().await.unwrap());
    op.set_abort_flag(true).await.unwrap();
    assert!(
        ledger
            .store()
            .read(op.operation_id())
            .await
            .unwrap()
            .aborted
    );
    assert!(op.check_abort().await.unwrap());
    op.set_abort_flag(false).await.unwrap();
    assert!(
        !ledger
            .store()
            .read(op.operation_id())
            .await
            .unwrap()
            .aborted
    );
    assert!(
        log_of(&ledger, op.operation_id())
            .await
            .contains("ABORT_FLAG_SET value=true")
    );
    op.complete().await.unwrap();
}

pub async fn trigger_abort_is_local_and_written(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let fired = Arc::new(Mutex::new(0));
    let f = fired.clone();
    let op = ledger
        .create_operation(
            OperationOptions::new().callback(OperationCallback::new().on_abort(move |_| {
                *f.lock().unwrap() += 1;
            })),
        )
        .await
        .unwrap();
    assert!(!op.is_aborted());
    op.trigger_abort();
    assert!(op.is_aborted());
    tokio::time::timeout(Duration::from_secs(5), op.aborted())
        .await
        .expect("aborted() resolves");
    let store = ledger.store().clone();
    let id = op.operation_id().clone();
    wait_until("abort flag written", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.read(&id).await.unwrap().aborted }
    })
    .await;
    assert_eq!(*fired.lock().unwrap(), 1, "on_abort fires once");
    op.complete().await.unwrap();
}

pub async fn abort_reaches_another_participant(b: &dyn Backend) {
    // Heartbeats far apart: the abort must come through change notification.
    let slow = |c: tom_dist_ledger::Connect| c.heartbeat_interval(Duration::from_secs(3600));
    let cli = connect_with(b, "cli", slow).await;
    let worker = connect_with(b, "w", slow).await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let joined = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let joined = joined.clone();
        async move {
            joined.aborted().await;
            std::time::Instant::now()
        }
    });
    let start = std::time::Instant::now();
    op.set_abort_flag(true).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("abort pushed without heartbeat")
        .unwrap();
    assert!(seen.duration_since(start) < Duration::from_secs(5));
    assert!(joined.is_aborted());
    joined.leave(false).await.unwrap();
    op.complete().await.unwrap();
}

pub async fn heartbeat_first_beat_is_immediate(b: &dyn Backend) {
    let ledger = connect_with(b, "cli", |c| {
        c.heartbeat_interval(Duration::from_secs(3600))
    })
    .await;
    let beats = Arc::new(Mutex::new(0));
    let n = beats.clone();
    let op = ledger
        .create_operation(OperationOptions::new().callback(
            OperationCallback::new().on_heartbeat_success(move |_, _| {
                *n.lock().unwrap() += 1;
            }),
        ))
        .await
        .unwrap();
    wait_until("first heartbeat", || {
        let beats = beats.clone();
        async move { *beats.lock().unwrap() >= 1 }
    })
    .await;
    op.complete().await.unwrap();
}

pub async fn heartbeat_result_and_participants_without_calls(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let worker = connect(b, "w").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let joined = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
    let result = op.heartbeat().await.unwrap();
    assert!(result.ledger_exists && result.heartbeat_updated);
    assert!(!result.abort_flag);
    assert_eq!(result.call_frame_count, 1);
    assert_eq!(result.temp_resource_count, 0);
    // The worker holds no call and is still visible.
    let names: Vec<&str> = result.participants.iter().map(|p| p.as_str()).collect();
    assert_eq!(names, vec!["cli", "w"]);
    assert!(
        result
            .participant_heartbeat_ages
            .contains_key(joined.participant_id())
    );
    assert!(!result.is_stale && !result.has_stale_children());
    // The beat's view of the operation: as it was and as it is after the beat (a beat
    // rewrites the document on some backends, is kept beside it on others).
    let before = result.data_before.unwrap();
    let after = result.data_after.unwrap();
    assert!(after.seq >= before.seq, "{} then {}", before.seq, after.seq);
    assert_eq!(after.call_frames.len(), 1);
    assert!(after.participants.contains_key(joined.participant_id()));
    call.end(()).await.unwrap();
    joined.leave(false).await.unwrap();
    let result = op.heartbeat().await.unwrap();
    assert_eq!(
        result.participants.len(),
        1,
        "a participant that left is not counted"
    );
    op.complete().await.unwrap();
}

/// A remote-looking participant (`remote`, on "another host") joined to `op`, with its
/// first heartbeat landed, so that only the manual clock ages it.
pub(crate) async fn join_as_remote(
    b: &dyn Backend,
    clock: SharedClock,
    cli: &tom_dist_ledger::Ledger,
    op: &tom_dist_ledger::Operation,
) -> tom_dist_ledger::Operation {
    let remote = connect_with(b, "remote", |c| {
        c.clock(clock).heartbeat_interval(Duration::from_secs(3600))
    })
    .await;
    let beats = Arc::new(Mutex::new(0));
    let counter = beats.clone();
    let joined = remote
        .join_operation(
            op.operation_id(),
            OperationOptions::new().callback(OperationCallback::new().on_heartbeat_success(
                move |_, _| {
                    *counter.lock().unwrap() += 1;
                },
            )),
        )
        .await
        .unwrap();
    // The joiner's first (immediate) beat must land before the clock moves.
    wait_until("joiner's first heartbeat", || {
        let beats = beats.clone();
        async move { *beats.lock().unwrap() >= 1 }
    })
    .await;
    let me = joined.participant_id().clone();
    cli.store()
        .modify(op.operation_id(), &mut |d| {
            let p = registered(d, &me)?;
            p.host = "elsewhere".into();
            p.boot_id = None;
            Ok(())
        })
        .await
        .unwrap();
    joined
}

/// A participant that stops beating is seen stale once its last beat is older than the
/// stale threshold, by the backend's own time (the judging participant's clock against
/// the recorded beat, or the server's clock): the heartbeat result lists it with its age,
/// and the heartbeat task reports it. A backend that pushes expiries (a server) may
/// declare it crashed first, which is what a user then sees.
pub async fn stale_participant_detected(b: &dyn Backend) {
    let stale = Duration::from_secs(2);
    let stale_ms = stale.as_millis() as u64;
    let cli = connect_with(b, "cli", |c| {
        c.heartbeat_interval(Duration::from_secs(3600))
            .stale_threshold(stale)
    })
    .await;
    let op = create_and_beat(&cli, OperationCallback::new()).await;
    // Taken before the joiner's last beat: whatever age it reaches, this much time passed.
    let silent_since = std::time::Instant::now();
    let joined = join_as_remote(b, Arc::new(SystemClock), &cli, &op).await;
    let me = joined.participant_id().clone();
    let fresh = op.heartbeat().await.unwrap();
    if silent_since.elapsed() < stale {
        assert!(fresh.stale_participants.is_empty(), "{fresh:?}");
    }
    let store = cli.store().clone();
    let id = op.operation_id().clone();
    let seen = Arc::new(Mutex::new(None));
    wait_until("the silent participant seen stale", || {
        let (op, store, id, me, seen) = (&op, store.clone(), id.clone(), me.clone(), seen.clone());
        async move {
            let result = op.heartbeat().await.unwrap();
            if result.stale_participants == vec![me.clone()] {
                *seen.lock().unwrap() = Some(result);
                return true;
            }
            store.read(&id).await.unwrap().participants[&me].state == ParticipantState::Crashed
        }
    })
    .await;
    assert!(silent_since.elapsed() >= stale, "not before the threshold");
    let Some(stale_result) = seen.lock().unwrap().take() else {
        // Declared crashed by the backend's push: fenced from now on.
        let err = joined
            .start_call::<()>(CallOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Fenced { .. }), "{err}");
        op.complete().await.unwrap();
        return;
    };
    assert!(stale_result.is_stale);
    assert!(
        stale_result.participant_heartbeat_ages[&me] > stale_ms,
        "{stale_result:?}"
    );
    assert!(
        stale_result.participant_heartbeat_ages[op.participant_id()] < stale_ms,
        "own beat is fresh: {stale_result:?}"
    );
    // Through the heartbeat task, a stale peer is reported as an error (or, pushed by
    // the backend, declared crashed).
    let errors = Arc::new(Mutex::new(Vec::new()));
    op.start_heartbeat(HeartbeatOptions {
        interval: Duration::from_secs(3600),
        jitter: Duration::ZERO,
        callback: OperationCallback::new().on_heartbeat_error({
            let e = errors.clone();
            move |_, err| e.lock().unwrap().push(err.clone())
        }),
    });
    wait_until("stale error reported or crash declared", || {
        let (errors, store, id, me) = (errors.clone(), store.clone(), id.clone(), me.clone());
        async move {
            errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.kind == HeartbeatErrorType::HeartbeatStale)
                || store
                    .read(&id)
                    .await
                    .is_ok_and(|d| d.participants[&me].state == ParticipantState::Crashed)
        }
    })
    .await;
    let _ = joined.leave(false).await;
    op.complete().await.unwrap();
}

pub async fn heartbeat_reports_abort_flag(b: &dyn Backend) {
    let ledger = connect_with(b, "cli", |c| {
        c.heartbeat_interval(Duration::from_millis(50))
            .heartbeat_jitter(Duration::ZERO)
    })
    .await;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    let op = ledger
        .create_operation(
            OperationOptions::new().callback(
                OperationCallback::new()
                    .on_heartbeat_error(move |_, err| e.lock().unwrap().push(err.kind)),
            ),
        )
        .await
        .unwrap();
    op.set_abort_flag(true).await.unwrap();
    wait_until("abort reported by heartbeat", || {
        let errors = errors.clone();
        async move {
            errors
                .lock()
                .unwrap()
                .contains(&HeartbeatErrorType::AbortFlagSet)
        }
    })
    .await;
    op.complete().await.unwrap();
}

pub async fn fenced_participant_writes_are_refused(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let worker = connect(b, "w").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let joined = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let me = joined.participant_id().clone();
    // Another participant declares `w` crashed.
    cli.store()
        .modify(op.operation_id(), &mut |d| {
            registered(d, &me)?.state = ParticipantState::Crashed;
            Ok(())
        })
        .await
        .unwrap();
    let err = joined
        .start_call::<()>(CallOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("is fenced out of operation"));
    let info = tokio::time::timeout(Duration::from_secs(10), joined.failed())
        .await
        .expect("fenced participant stops");
    assert!(info.reason.unwrap().contains("fenced"));
    op.complete().await.unwrap();
}

pub async fn failure_deletes_temp_resources_and_archives(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let worker = connect(b, "w").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let joined = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("cli.tmp");
    let theirs = dir.path().join("w-dir");
    std::fs::write(&mine, "x").unwrap();
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("inner"), "y").unwrap();
    op.register_temp_resource(&mine).await.unwrap();
    joined.register_temp_resource(&theirs).await.unwrap();
    let call = joined.start_call::<()>(CallOptions::new()).await.unwrap();
    op.fail("build broke").await.unwrap();
    let info = tokio::time::timeout(Duration::from_secs(10), joined.failed())
        .await
        .expect("peer sees failure");
    assert_eq!(info.reason.as_deref(), Some("build broke"));
    let store = cli.store().clone();
    let id = op.operation_id().clone();
    wait_until("archived as failed", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.read_archived(&id).await.is_ok() }
    })
    .await;
    assert!(!mine.exists() && !theirs.exists(), "temp resources deleted");
    let data = store.read_archived(&id).await.unwrap();
    assert_eq!(data.operation_state, OperationState::Failed);
    assert!(data.temp_resources.is_empty());
    let log = log_of(&cli, &id).await;
    assert!(log.contains("CLEANUP_DONE participant=w"), "{log}");
    assert!(log.contains("CLEANUP_COMPLETED coordinator=cli"), "{log}");
    drop(call);
}

/// A silent participant on another machine is declared crashed once its last beat is
/// older than the stale threshold by the backend's own time (the initiator's beats judge
/// it, or a server pushes its expiry), its contained call goes, and it is fenced.
pub async fn stale_remote_participant_is_declared_crashed_and_fenced(b: &dyn Backend) {
    let cli = connect_with(b, "cli", |c| {
        c.heartbeat_interval(Duration::from_secs(3600))
            .stale_threshold(Duration::from_secs(2))
    })
    .await;
    let op = create_and_beat(&cli, OperationCallback::new()).await;
    let joined = join_as_remote(b, Arc::new(SystemClock), &cli, &op).await;
    let call = joined
        .start_call::<()>(CallOptions::new().fail_on_crash(false))
        .await
        .unwrap();
    let me = joined.participant_id().clone();
    op.start_heartbeat(HeartbeatOptions {
        interval: Duration::from_millis(200),
        jitter: Duration::ZERO,
        callback: OperationCallback::new(),
    });
    let store = cli.store().clone();
    let id = op.operation_id().clone();
    wait_until("the remote participant declared crashed", || {
        let store = store.clone();
        let id = id.clone();
        let me = me.clone();
        async move {
            store.read(&id).await.unwrap().participants[&me].state == ParticipantState::Crashed
        }
    })
    .await;
    let data = store.read(&id).await.unwrap();
    assert_eq!(
        data.operation_state,
        OperationState::Running,
        "fail_on_crash=false: contained"
    );
    assert!(data.call_frames.is_empty());
    let err = joined
        .start_call::<()>(CallOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    drop(call);
    op.complete().await.unwrap();
}
