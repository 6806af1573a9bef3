//! A panic in spawned work or in a callback fails the call with the panic message;
//! `join`, `sync` and `leave` resolve, the frame goes, background tasks keep running.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tom_dist_ledger::Error;
use tom_dist_ledger::ledger::{
    CallCallback, CallOptions, OperationCallback, OperationOptions, SyncOptions, TrackedCall,
};
use tom_dist_ledger::model::OperationState;

use super::{Backend, connect, connect_with, log_of, wait_until};

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn cleanup_counter<T: Send + 'static>(n: &Arc<AtomicUsize>) -> CallCallback<T> {
    let n = n.clone();
    CallCallback::new().on_cleanup(move || {
        let n = n.clone();
        async move {
            n.fetch_add(1, Ordering::SeqCst);
        }
    })
}

async fn frames(ledger: &tom_dist_ledger::Ledger, op: &tom_dist_ledger::Operation) -> usize {
    ledger
        .store()
        .read(op.operation_id())
        .await
        .unwrap()
        .call_frames
        .len()
}

pub async fn panic_in_spawned_work_fails_the_call(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let cleaned = counter();
    let call = op.spawn_call(
        CallOptions::<u32>::new()
            .fail_on_crash(false)
            .callback(cleanup_counter(&cleaned)),
        |_| async move {
            tokio::task::yield_now().await;
            if true {
                panic!("boom in the work");
            }
            Ok::<u32, String>(1)
        },
    );
    let err = tokio::time::timeout(Duration::from_secs(20), call.join())
        .await
        .expect("join resolves")
        .unwrap_err();
    assert!(matches!(err, Error::CallFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("panicked: boom in the work"),
        "{err}"
    );
    assert_eq!(cleaned.load(Ordering::SeqCst), 1, "on_cleanup ran");
    let result = op
        .sync(&[&call as &dyn TrackedCall], SyncOptions::new())
        .await;
    assert_eq!(result.failed_calls, vec![call.call_id().clone()]);
    assert_eq!(frames(&ledger, &op).await, 0, "frame removed");
    // Work that panics before its first await is caught as well.
    let sync_panic = op.spawn_call(
        CallOptions::<u32>::new().fail_on_crash(false),
        |_| -> std::future::Ready<Result<u32, String>> { panic!("boom while building the work") },
    );
    let err = sync_panic.join().await.unwrap_err();
    assert!(err.to_string().contains("boom while building"), "{err}");
    let log = log_of(&ledger, op.operation_id()).await;
    assert!(log.contains("panicked: boom in the work"), "{log}");
    // Nothing is left pending: leave without cancelling works.
    assert!(op.pending_spawned_calls().is_empty());
    assert_eq!(op.operation_state().await.unwrap(), OperationState::Running);
    op.complete().await.unwrap();
}

pub async fn panic_in_spawned_work_with_fail_on_crash_fails_the_operation(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.spawn_call(CallOptions::<u32>::new(), |_| async move {
        if true {
            panic!("fatal boom");
        }
        Ok::<u32, String>(1)
    });
    let err = call.join().await.unwrap_err();
    assert!(err.to_string().contains("fatal boom"), "{err}");
    let info = tokio::time::timeout(Duration::from_secs(20), op.failed())
        .await
        .expect("the operation fails");
    assert!(info.reason.unwrap().contains("panicked: fatal boom"));
    assert_eq!(info.crashed_call_ids, vec![call.call_id().clone()]);
}

pub async fn panic_in_on_completion_fails_the_call(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let cleaned = counter();
    let panicking = || {
        cleanup_counter::<u32>(&cleaned).on_completion(|v: u32| async move {
            panic!("on_completion got {v}");
        })
    };
    // A spawned call.
    let spawned = op.spawn_call(
        CallOptions::new()
            .fail_on_crash(false)
            .callback(panicking()),
        |_| async move { Ok::<u32, String>(7) },
    );
    let err = tokio::time::timeout(Duration::from_secs(20), spawned.join())
        .await
        .expect("join resolves")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("on_completion panicked: on_completion got 7"),
        "{err}"
    );
    assert!(spawned.is_failed());
    // A regular call: `end` reports the panic as the call's failure.
    let call = op
        .start_call(
            CallOptions::new()
                .fail_on_crash(false)
                .callback(panicking()),
        )
        .await
        .unwrap();
    let err = call.end(8).await.unwrap_err();
    assert!(matches!(err, Error::CallFailed { .. }), "{err}");
    assert!(err.to_string().contains("on_completion got 8"), "{err}");
    assert_eq!(cleaned.load(Ordering::SeqCst), 2, "on_cleanup ran for both");
    assert_eq!(frames(&ledger, &op).await, 0);
    // The on_call_crashed fallback panicking: no fallback, the call fails.
    let crashed = op.spawn_call(
        CallOptions::<u32>::new()
            .fail_on_crash(false)
            .callback(CallCallback::new().on_call_crashed(|| async { panic!("no fallback here") })),
        |_| async move { Err::<u32, String>("work failed".into()) },
    );
    let err = crashed.join().await.unwrap_err();
    assert!(err.to_string().contains("work failed"), "{err}");
    assert!(err.to_string().contains("no fallback here"), "{err}");
    assert_eq!(op.operation_state().await.unwrap(), OperationState::Running);
    op.complete().await.unwrap();
}

pub async fn panic_in_on_cleanup_is_caught(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let panicking = || CallCallback::<u32>::new().on_cleanup(|| async { panic!("cleanup boom") });
    // A spawned call that fails.
    let spawned = op.spawn_call(
        CallOptions::new()
            .fail_on_crash(false)
            .callback(panicking()),
        |_| async move { Err::<u32, String>("work failed".into()) },
    );
    let err = tokio::time::timeout(Duration::from_secs(20), spawned.join())
        .await
        .expect("join resolves")
        .unwrap_err();
    assert!(err.to_string().contains("work failed"), "{err}");
    assert!(
        err.to_string()
            .contains("on_cleanup panicked: cleanup boom"),
        "{err}"
    );
    // A regular call failed by hand.
    let call = op
        .start_call(
            CallOptions::new()
                .fail_on_crash(false)
                .callback(panicking()),
        )
        .await
        .unwrap();
    let err = call.fail("given up").await.unwrap_err();
    assert!(err.to_string().contains("cleanup boom"), "{err}");
    // A spawned call cancelled by leave(true), in a session of its own.
    let session = ledger
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let pending = session.spawn_call(
        CallOptions::new()
            .fail_on_crash(false)
            .callback(panicking()),
        |_| std::future::pending::<Result<u32, String>>(),
    );
    let regular = session
        .start_call(
            CallOptions::new()
                .fail_on_crash(false)
                .callback(panicking()),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), session.leave(true))
        .await
        .expect("leave resolves")
        .unwrap();
    assert!(pending.is_completed() && pending.is_failed());
    drop(regular);
    assert_eq!(frames(&ledger, &op).await, 0);
    let log = log_of(&ledger, op.operation_id()).await;
    assert!(log.contains("CALLBACK_PANICKED"), "{log}");
    op.complete().await.unwrap();
}

pub async fn panicking_heartbeat_callback_does_not_stop_the_heartbeat(b: &dyn Backend) {
    let ledger = connect_with(b, "cli", |c| {
        c.heartbeat_interval(Duration::from_millis(20))
            .heartbeat_jitter(Duration::ZERO)
    })
    .await;
    let beats = counter();
    let n = beats.clone();
    let aborts = counter();
    let a = aborts.clone();
    let op = ledger
        .create_operation(
            OperationOptions::new().callback(
                OperationCallback::new()
                    .on_heartbeat_success(move |_, _| {
                        n.fetch_add(1, Ordering::SeqCst);
                        panic!("heartbeat callback boom");
                    })
                    .on_abort(move |_| {
                        a.fetch_add(1, Ordering::SeqCst);
                        panic!("abort callback boom");
                    }),
            ),
        )
        .await
        .unwrap();
    wait_until("three heartbeats despite the panics", || {
        let beats = beats.clone();
        async move { beats.load(Ordering::SeqCst) >= 3 }
    })
    .await;
    op.set_abort_flag(true).await.unwrap();
    wait_until("the abort callback", || {
        let aborts = aborts.clone();
        async move { aborts.load(Ordering::SeqCst) == 1 }
    })
    .await;
    assert!(op.is_aborted());
    op.complete().await.unwrap();
}
