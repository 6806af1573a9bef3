//! Typed outcomes of exec workers (a caller of `join()` matches the error), the one
//! exec-worker call with its running report, and reading an operation from outside (live
//! data, log, the wait for its archive) through the ledger, on any backend.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tom_dist_ledger::ledger::{CallOptions, ExecWorker, OperationOptions, WorkerResult};
use tom_dist_ledger::model::LogLevel;
use tom_dist_ledger::process::{RunOptions, WorkerCommand};
use tom_dist_ledger::{CallId, Error};

use super::{Backend, connect};
use crate::common::process::TestScope;

const EXIT: &str = env!("CARGO_BIN_EXE_worker-exit");
const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

/// A decoder for workers whose result is their exit status: nothing to decode.
fn no_output(text: &str) -> Result<(), String> {
    if text.is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected output `{text}`"))
    }
}

pub async fn join_gives_the_exit_status_typed(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let running: Arc<Mutex<Option<(CallId, i32)>>> = Arc::default();
    let seen = running.clone();
    let command = WorkerCommand::new(EXIT).args(["3", "--marker", &scope.marker]);
    let call = op.exec_worker(
        ExecWorker::with_decoder(command, Arc::new(no_output))
            .result(WorkerResult::ExitStatus)
            .call(CallOptions::new().fail_on_crash(false))
            .on_running(move |call, info| *seen.lock().unwrap() = Some((call.clone(), info.pid))),
    );
    let err = call.join().await.unwrap_err();
    match err.cause() {
        Error::WorkerFailed { exit, .. } => assert_eq!(exit.code(), Some(3), "{err}"),
        other => panic!("expected the worker's exit status, got {other:?}"),
    }
    assert!(matches!(
        call.failure().as_deref(),
        Some(Error::WorkerFailed { .. })
    ));
    let (reported, pid) = running.lock().unwrap().clone().expect("running reported");
    assert_eq!(&reported, call.call_id());
    assert!(pid > 0);
    scope.assert_clean();
    op.complete().await.unwrap();
}

pub async fn join_gives_a_timeout_typed(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let after = Duration::from_millis(300);
    let command = WorkerCommand::new(HANG).args(["--marker", &scope.marker]);
    let call = op.exec_worker(
        ExecWorker::with_decoder(command, Arc::new(no_output))
            .result(WorkerResult::ExitStatus)
            .call(CallOptions::new().fail_on_crash(false))
            .run(
                RunOptions::default()
                    .timeout(after)
                    .grace(Duration::from_millis(300)),
            ),
    );
    let err = call.join().await.unwrap_err();
    match err.cause() {
        Error::Timeout { after: t, .. } => assert_eq!(*t, after),
        other => panic!("expected a timeout, got {other:?}"),
    }
    scope.assert_clean();
    op.complete().await.unwrap();
}

pub async fn exit_status_worker_succeeds(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let command = WorkerCommand::new(EXIT).args(["0", "--marker", &scope.marker]);
    let call = op.exec_worker(
        ExecWorker::with_decoder(command, Arc::new(no_output)).result(WorkerResult::ExitStatus),
    );
    call.join().await.unwrap();
    assert_eq!(call.description(), Some("Worker"));
    scope.assert_clean();
    op.complete().await.unwrap();
}

pub async fn an_operation_is_read_from_outside(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let reader = connect(b, "reader").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let id = op.operation_id().clone();
    op.log("hello from the initiator", LogLevel::Info)
        .await
        .unwrap();
    assert!(
        reader
            .read_log(&id)
            .await
            .unwrap()
            .contains("hello from the initiator")
    );
    assert_eq!(reader.read_live(&id).await.unwrap().operation_id, id);
    // Still live: the bounded wait gives up.
    assert!(!reader.wait_archived(&id, Duration::from_millis(50)).await);
    op.complete().await.unwrap();
    assert!(reader.wait_archived(&id, Duration::from_secs(20)).await);
    assert!(matches!(
        reader.read_live(&id).await,
        Err(Error::OperationNotFound(_))
    ));
}
