//! The ledger's bounds seen through the library: heartbeats leave no trail entries, and a
//! held operation lock fails a heartbeat as `LockFailed` (naming the holder) without
//! blocking the runtime.

mod common;

use std::fs::{self, File};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wait_until;
use tom_dist_ledger::{
    CallOptions, Connect, HeartbeatErrorType, HeartbeatOptions, Ledger, OperationCallback,
    OperationOptions, ParticipantId,
};

fn trail_entries(dir: &std::path::Path, op: &str) -> usize {
    fs::read_dir(dir.join(format!("{op}_trail")))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn heartbeats_leave_no_trail_entries() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::connect(
        Connect::local(dir.path())
            .participant(ParticipantId::parse("cli").unwrap())
            .heartbeat_interval(Duration::from_millis(10))
            .heartbeat_jitter(Duration::ZERO),
    )
    .await
    .unwrap();
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
    call.end(()).await.unwrap();
    let store = ledger.store().clone();
    let id = op.operation_id().clone();
    let mut seq = 0;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while seq < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {seq} writes: the heartbeat is not beating"
        );
        seq = store.read(&id).await.unwrap().seq;
        let mut changes = store.watch(&id).unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.next()).await;
    }
    let entries = trail_entries(dir.path(), id.as_str());
    assert!(
        entries <= 2,
        "{entries} trail entries after {seq} writes, of which 2 were changes"
    );
    op.complete().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_held_lock_fails_a_heartbeat_as_lock_failed_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::connect(
        Connect::local(dir.path())
            .participant(ParticipantId::parse("cli").unwrap())
            .heartbeat_interval(Duration::from_secs(3600))
            .lock_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let lock_path = dir
        .path()
        .join(format!("{}.operation.json.lock", op.operation_id()));
    let holder = File::options()
        .read(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    holder.lock().unwrap();

    let errors = Arc::new(Mutex::new(Vec::new()));
    op.start_heartbeat(HeartbeatOptions {
        interval: Duration::from_secs(3600),
        jitter: Duration::ZERO,
        callback: OperationCallback::new().on_heartbeat_error({
            let errors = errors.clone();
            move |_, e| errors.lock().unwrap().push(e.clone())
        }),
    });
    // This test's own runtime thread is the only one: were it blocked in the wait, the
    // error could never be seen here.
    wait_until("the heartbeat to give up on the lock", || {
        !errors.lock().unwrap().is_empty()
    })
    .await;
    let error = errors.lock().unwrap()[0].clone();
    assert_eq!(error.kind, HeartbeatErrorType::LockFailed, "{error}");
    assert!(
        error
            .message
            .contains(&format!("held by pid {}", std::process::id())),
        "{error}"
    );
    holder.unlock().unwrap();
    op.heartbeat().await.expect("the lock is free again");
    op.complete().await.unwrap();
}
