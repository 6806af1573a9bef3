//! Calls, spawned calls, sync and waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tom_dist_ledger::ledger::{
    CallCallback, CallOptions, OperationOptions, SyncOptions, TrackedCall, WaitOptions,
};
use tom_dist_ledger::model::{FrameState, OperationState};
use tom_dist_ledger::{Error, OperationFailedInfo};

use super::{Backend, connect, log_of, wait_until};

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

pub async fn start_and_end_a_call(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let before = ledger.store().read(op.operation_id()).await.unwrap();
    let completed = Arc::new(std::sync::Mutex::new(None));
    let seen = completed.clone();
    let call = op
        .start_call::<i32>(
            CallOptions::new()
                .description("Process document")
                .fail_on_crash(false)
                .callback(CallCallback::new().on_completion(move |v| {
                    let seen = seen.clone();
                    async move { *seen.lock().unwrap() = Some(v) }
                })),
        )
        .await
        .unwrap();
    assert!(call.call_id().as_str().starts_with("call_cli_"));
    assert_eq!(call.description(), Some("Process document"));
    let data = ledger.store().read(op.operation_id()).await.unwrap();
    assert!(data.seq > before.seq);
    let frame = data.frame(call.call_id()).expect("frame recorded");
    assert_eq!(frame.participant_id.as_str(), "cli");
    assert_eq!(frame.pid, std::process::id() as i64);
    assert_eq!(frame.state, FrameState::Active);
    assert!(!frame.fail_on_crash);
    assert_eq!(frame.session_id, Some(op.session_id()));
    assert!(data.last_heartbeat >= before.last_heartbeat);
    assert!(
        op.cached_data().unwrap().seq >= data.seq,
        "cache follows writes"
    );
    call.end(7).await.unwrap();
    assert!(call.is_completed());
    assert_eq!(*completed.lock().unwrap(), Some(7));
    let data = ledger.store().read(op.operation_id()).await.unwrap();
    assert!(data.call_frames.is_empty());
    let log = log_of(&ledger, op.operation_id()).await;
    assert!(log.contains(&format!(
        "CALL_STARTED callId={} participant=cli",
        call.call_id()
    )));
    assert!(log.contains(&format!("CALL_ENDED callId={} duration=", call.call_id())));
    op.complete().await.unwrap();
}

pub async fn call_end_twice_fails(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
    call.end(()).await.unwrap();
    let err = call.end(()).await.unwrap_err();
    assert!(matches!(err, Error::CallCompleted(_)), "{err}");
    let err = call.fail("late").await.unwrap_err();
    assert!(matches!(err, Error::CallCompleted(_)), "{err}");
    op.complete().await.unwrap();
}

pub async fn failed_call_with_fail_on_crash_fails_the_operation(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let cleaned = counter();
    let c = cleaned.clone();
    let call = op
        .start_call::<()>(
            CallOptions::new().callback(CallCallback::new().on_cleanup(move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            })),
        )
        .await
        .unwrap();
    call.fail("disk full").await.unwrap();
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    let info: OperationFailedInfo = op.failed().await;
    assert_eq!(info.crashed_call_ids, vec![call.call_id().clone()]);
    assert!(info.reason.unwrap().contains("disk full"));
    let id = op.operation_id().clone();
    let store = ledger.store().clone();
    wait_until("failed operation archived", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.read_archived(&id).await.is_ok() }
    })
    .await;
    let data = store.read_archived(&id).await.unwrap();
    assert_eq!(data.operation_state, OperationState::Failed);
    assert!(data.detection_timestamp.is_some());
    assert!(data.removal_timestamp.is_some());
    assert!(data.call_frames.is_empty());
    let log = log_of(&ledger, &id).await;
    assert!(log.contains("CALL_FAILED"), "{log}");
    assert!(log.contains("OPERATION_FAILED"), "{log}");
    assert!(log.contains("CLEANUP_STARTED coordinator=cli"), "{log}");
}

pub async fn failed_call_without_fail_on_crash_is_contained(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op
        .start_call::<()>(CallOptions::new().fail_on_crash(false))
        .await
        .unwrap();
    call.fail("optional step broke").await.unwrap();
    assert!(op.failure().is_none());
    assert_eq!(op.operation_state().await.unwrap(), OperationState::Running);
    assert!(
        ledger
            .store()
            .read(op.operation_id())
            .await
            .unwrap()
            .call_frames
            .is_empty()
    );
    op.complete().await.unwrap();
}

pub async fn dropped_call_is_failed_and_logged(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op
        .start_call::<()>(CallOptions::new().fail_on_crash(false))
        .await
        .unwrap();
    let id = call.call_id().clone();
    drop(call);
    let store = ledger.store().clone();
    let opid = op.operation_id().clone();
    wait_until("dropped call's frame to go", || {
        let store = store.clone();
        let opid = opid.clone();
        async move { store.read(&opid).await.unwrap().call_frames.is_empty() }
    })
    .await;
    wait_until("dropped call logged", || {
        let ledger = ledger.clone();
        let opid = opid.clone();
        let id = id.clone();
        async move {
            log_of(&ledger, &opid).await.contains(&format!(
                "CALL_FAILED callId={id} error=dropped without end or fail"
            ))
        }
    })
    .await;
    op.complete().await.unwrap();
}

pub async fn spawned_call_runs_and_returns(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let completions = counter();
    let c = completions.clone();
    let call = op.spawn_call(
        CallOptions::new().callback(CallCallback::new().on_completion(move |v: i32| {
            let c = c.clone();
            async move {
                assert_eq!(v, 42);
                c.fetch_add(1, Ordering::SeqCst);
            }
        })),
        |ctx| async move {
            assert!(ctx.call_id.as_str().starts_with("call_cli_"));
            let _ = rx.await;
            Ok::<_, Error>(42)
        },
    );
    // The id is there at once, and the call is pending.
    assert!(!call.is_completed());
    assert_eq!(op.pending_spawned_calls(), vec![call.call_id().clone()]);
    assert!(matches!(call.result(), Err(Error::CallPending(_))));
    let store = ledger.store().clone();
    let opid = op.operation_id().clone();
    let cid = call.call_id().clone();
    wait_until("spawned frame", || {
        let store = store.clone();
        let opid = opid.clone();
        let cid = cid.clone();
        async move { store.read(&opid).await.unwrap().frame(&cid).is_some() }
    })
    .await;
    tx.send(()).unwrap();
    assert_eq!(call.join().await.unwrap(), 42);
    assert!(call.is_success());
    assert_eq!(call.result_or_none(), Some(42));
    assert_eq!(completions.load(Ordering::SeqCst), 1);
    assert!(op.pending_spawned_calls().is_empty());
    assert!(
        store.read(&opid).await.unwrap().call_frames.is_empty(),
        "frame gone once joined"
    );
    let log = log_of(&ledger, &opid).await;
    assert!(log.contains(&format!("CALL_SPAWNED callId={cid}")));
    assert!(log.contains(&format!("CALL_COMPLETED callId={cid}")));
    assert_eq!(call.to_string(), format!("SpawnedCall({cid}, success)"));
    op.complete().await.unwrap();
}

pub async fn spawned_call_failure_uses_fallback(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.spawn_call(
        CallOptions::new().callback(CallCallback::new().on_call_crashed(|| async { Some(-1) })),
        |_| async { Err::<i32, _>("boom") },
    );
    assert_eq!(call.join().await.unwrap(), -1);
    assert!(call.is_success());
    assert!(
        op.failure().is_none(),
        "a fallback keeps the operation alive"
    );
    op.complete().await.unwrap();
}

pub async fn spawned_call_null_fallback_fails(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let cleaned = counter();
    let c = cleaned.clone();
    let call = op.spawn_call(
        CallOptions::new().fail_on_crash(false).callback(
            CallCallback::new()
                .on_call_crashed(|| async { None })
                .on_cleanup(move || {
                    let c = c.clone();
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                }),
        ),
        |_| async { Err::<i32, _>("boom") },
    );
    call.wait().await;
    assert!(call.is_failed());
    assert_eq!(call.error().as_deref(), Some("boom"));
    assert_eq!(call.result_or(5), 5);
    let err = call.result().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("call `{}` failed: boom", call.call_id())
    );
    assert_eq!(
        cleaned.load(Ordering::SeqCst),
        1,
        "on_cleanup runs for any failed call"
    );
    assert!(op.failure().is_none(), "fail_on_crash=false is contained");
    op.complete().await.unwrap();
}

pub async fn spawned_call_failure_fails_operation(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.spawn_call(CallOptions::<()>::new(), |_| async {
        Err::<(), _>("fatal")
    });
    call.wait().await;
    let info = op.failed().await;
    assert_eq!(info.crashed_call_ids, vec![call.call_id().clone()]);
}

pub async fn cancel_really_stops_the_work(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let dropped = Arc::new(tokio::sync::Notify::new());
    struct OnDrop(Arc<tokio::sync::Notify>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }
    let guard = OnDrop(dropped.clone());
    let call = op.spawn_call(CallOptions::<()>::new(), move |_| async move {
        let _guard = guard;
        let _ = started_tx.send(());
        std::future::pending::<()>().await;
        Ok::<_, Error>(())
    });
    started_rx.await.unwrap();
    call.cancel().await;
    tokio::time::timeout(Duration::from_secs(10), dropped.notified())
        .await
        .expect("work dropped");
    assert!(call.is_cancelled());
    assert!(call.is_failed());
    assert!(matches!(call.result(), Err(Error::Cancelled(_))));
    assert!(
        op.failure().is_none(),
        "cancelling does not fail the operation"
    );
    assert!(
        ledger
            .store()
            .read(op.operation_id())
            .await
            .unwrap()
            .call_frames
            .is_empty()
    );
    assert!(
        log_of(&ledger, op.operation_id())
            .await
            .contains("CALL_CANCELLED")
    );
    op.complete().await.unwrap();
}

pub async fn kill_without_process_returns_false(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.spawn_call(CallOptions::<()>::new(), |ctx| async move {
        ctx.token.cancelled().await;
        Ok::<_, Error>(())
    });
    assert!(!call.kill(Signal::SIGTERM));
    call.cancel().await;
    assert!(
        !call.kill(Signal::SIGTERM),
        "finished calls cannot be killed"
    );
    op.complete().await.unwrap();
}

pub async fn sync_waits_for_all_and_reports(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let c1 = op.spawn_call(CallOptions::new(), |_| async { Ok::<_, Error>(1) });
    let c2 = op.spawn_call(CallOptions::new(), |_| async {
        tokio::task::yield_now().await;
        Ok::<_, Error>(2)
    });
    let c3 = op.spawn_call(CallOptions::<i32>::new().fail_on_crash(false), |_| async {
        Err::<i32, _>("no")
    });
    let done = counter();
    let d = done.clone();
    let calls: [&dyn TrackedCall; 3] = [&c1, &c2, &c3];
    let result = op
        .sync(
            &calls,
            SyncOptions::new().on_completion(move || {
                let d = d.clone();
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await;
    assert_eq!(
        result.successful_calls,
        vec![c1.call_id().clone(), c2.call_id().clone()]
    );
    assert_eq!(result.failed_calls, vec![c3.call_id().clone()]);
    assert!(result.all_resolved());
    assert!(result.has_failed());
    assert!(!result.all_succeeded());
    assert!(!result.operation_failed);
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(
        result.to_string(),
        "SyncResult(successful: 2, failed: 1, unknown: 0, operationFailed: false)"
    );
    op.complete().await.unwrap();
}

pub async fn sync_empty_returns_at_once_and_calls_on_completion(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let done = counter();
    let d = done.clone();
    let result = op
        .sync(
            &[],
            SyncOptions::new().on_completion(move || {
                let d = d.clone();
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await;
    assert!(result.all_succeeded());
    assert_eq!(
        done.load(Ordering::SeqCst),
        1,
        "no calls: all resolved at once"
    );
    op.complete().await.unwrap();
}

pub async fn sync_reports_operation_failure(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let slow = op.spawn_call(CallOptions::<()>::new(), |ctx| async move {
        ctx.token.cancelled().await;
        Ok::<_, Error>(())
    });
    let failing = op.spawn_call(CallOptions::<()>::new(), |_| async {
        Err::<(), _>("crash")
    });
    let notified = counter();
    let n = notified.clone();
    let calls: [&dyn TrackedCall; 2] = [&slow, &failing];
    let result = op
        .sync(
            &calls,
            SyncOptions::new().on_operation_failed(move |_| {
                let n = n.clone();
                async move {
                    n.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await;
    assert!(result.operation_failed);
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    assert!(!result.all_succeeded());
    // The failure cancels the remaining spawned call.
    slow.wait().await;
    assert!(slow.is_failed());
}

pub async fn await_call_single(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let ok = op.spawn_call(CallOptions::new(), |_| async {
        Ok::<_, Error>("x".to_string())
    });
    let result = op.await_call(&ok, SyncOptions::new()).await;
    assert!(result.all_succeeded());
    let bad = op.spawn_call(CallOptions::<()>::new().fail_on_crash(false), |_| async {
        Err::<(), _>("e")
    });
    let result = op.await_call(&bad, SyncOptions::new()).await;
    assert_eq!(result.failed_calls, vec![bad.call_id().clone()]);
    assert!(!result.operation_failed);
    op.complete().await.unwrap();
}

pub async fn wait_for_completion_paths(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let v = op
        .wait_for_completion(async { Ok::<_, String>(3) }, WaitOptions::new())
        .await
        .unwrap();
    assert_eq!(v, 3);
    let v = op
        .wait_for_completion(
            async { Err::<i32, _>("bad".to_string()) },
            WaitOptions::new().on_error(|e| async move {
                assert_eq!(e, "bad");
                -1
            }),
        )
        .await
        .unwrap();
    assert_eq!(v, -1);
    let err = op
        .wait_for_completion(async { Err::<i32, _>("bad") }, WaitOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "work failed: bad");
    // The operation fails while the work hangs: the work gives way.
    let notified = counter();
    let n = notified.clone();
    let failer = op.clone();
    tokio::spawn(async move { failer.fail("stop everything").await });
    let err = op
        .wait_for_completion(
            std::future::pending::<Result<i32, String>>(),
            WaitOptions::new().on_operation_failed(move |_| {
                let n = n.clone();
                async move {
                    n.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OperationFailed { .. }), "{err}");
    assert!(err.to_string().contains("stop everything"));
    assert_eq!(notified.load(Ordering::SeqCst), 1);
}

pub async fn leave_cancels_pending_when_asked(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let worker = connect(b, "w").await;
    let s = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let spawned = s.spawn_call(CallOptions::<()>::new(), |_| {
        std::future::pending::<Result<(), Error>>()
    });
    let regular = s.start_call::<()>(CallOptions::new()).await.unwrap();
    assert!(s.leave(false).await.is_err());
    s.leave(true).await.unwrap();
    assert!(spawned.is_cancelled() && spawned.is_failed());
    assert!(
        cli.store()
            .read(op.operation_id())
            .await
            .unwrap()
            .call_frames
            .is_empty()
    );
    assert!(op.failure().is_none());
    drop(regular);
    op.complete().await.unwrap();
}

/// The futures of the API can move to other tasks and threads.
#[allow(dead_code)]
fn futures_are_send(op: &tom_dist_ledger::Operation) {
    fn send<T: Send>(_: T) {}
    send(op.failed());
    send(op.aborted());
    send(op.leave(false));
    send(op.complete());
}
