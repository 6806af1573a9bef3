//! How participation ends: completing with calls still running, leaving with calls to
//! cancel, writes of a fenced participant, recovery offered on connect.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tom_dist_ledger::Error;
use tom_dist_ledger::ledger::{CallCallback, CallOptions, ExecWorker, OperationOptions};
use tom_dist_ledger::model::{OperationState, ParticipantState};
use tom_dist_ledger::process::{RunOptions, WorkerCommand};

use super::exec::{ready, ready_signal};
use super::{Backend, connect, connect_with, log_of, registered, wait_until};
use crate::common::process::{TestScope, alive, assert_none_left};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

/// The pid of the worker recorded in the frame of `call` (waits for the frame).
async fn recorded_pid(
    ledger: &tom_dist_ledger::Ledger,
    op: &tom_dist_ledger::OperationId,
    call: &tom_dist_ledger::CallId,
) -> i32 {
    let store = ledger.store().clone();
    wait_until("the worker recorded in its frame", || {
        let store = store.clone();
        async move {
            store
                .read(op)
                .await
                .is_ok_and(|d| d.frame(call).is_some_and(|f| f.process.is_some()))
        }
    })
    .await;
    let data = store.read(op).await.unwrap();
    data.frame(call).unwrap().process.as_ref().unwrap().pid
}

pub async fn complete_refuses_while_own_calls_run_and_cancels_when_asked(b: &dyn Backend) {
    let scope = TestScope::new();
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    op.set_worker_grace(Duration::from_millis(500));
    let (on_line, rx) = ready_signal();
    let results = tempfile::tempdir().unwrap();
    let worker = op.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(HANG).args(["--marker", &scope.marker]))
            .run(RunOptions::default().on_stdout(on_line)),
        results.path().join("r.json"),
    );
    ready(rx).await;
    let pid = recorded_pid(&ledger, op.operation_id(), worker.call_id()).await;
    let cleaned = Arc::new(AtomicUsize::new(0));
    let c = cleaned.clone();
    let spawned = op.spawn_call(
        CallOptions::<()>::new().callback(CallCallback::new().on_cleanup(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        })),
        |_| std::future::pending::<Result<(), String>>(),
    );
    let regular = op.start_call::<()>(CallOptions::new()).await.unwrap();

    let err = op.complete().await.unwrap_err();
    assert!(matches!(err, Error::RunningCalls { .. }), "{err}");
    let text = err.to_string();
    for id in [worker.call_id(), spawned.call_id(), regular.call_id()] {
        assert!(text.contains(id.as_str()), "{text} names {id}");
    }
    assert!(!text.contains('\n'));
    assert_eq!(op.operation_state().await.unwrap(), OperationState::Running);
    assert!(alive(pid), "refusing changes nothing");

    tokio::time::timeout(Duration::from_secs(30), op.complete_cancelling())
        .await
        .expect("complete_cancelling returns")
        .unwrap();
    assert!(
        !alive(pid),
        "the worker is stopped before the operation ends"
    );
    assert_none_left(&scope.marker);
    assert!(worker.is_cancelled() && worker.is_failed());
    assert!(spawned.is_cancelled() && spawned.is_failed());
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    drop(regular);
    let data = ledger
        .store()
        .read_archived(op.operation_id())
        .await
        .unwrap();
    assert_eq!(data.operation_state, OperationState::Completed);
    assert!(data.call_frames.is_empty());
}

pub async fn complete_right_after_dropping_a_call(b: &dyn Backend) {
    let ledger = connect(b, "cli").await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let call = op
        .start_call::<()>(CallOptions::new().fail_on_crash(false))
        .await
        .unwrap();
    drop(call);
    op.complete().await.unwrap();
}

pub async fn forced_completion_cancels_every_participants_calls(b: &dyn Backend) {
    let scope = TestScope::new();
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let other = connect(b, "w").await;
    let joined = other
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    joined.set_worker_grace(Duration::from_millis(500));
    let (on_line, rx) = ready_signal();
    let results = tempfile::tempdir().unwrap();
    let worker = joined.exec_file_result_worker::<Value>(
        ExecWorker::new(WorkerCommand::new(HANG).args(["--marker", &scope.marker]))
            .run(RunOptions::default().on_stdout(on_line)),
        results.path().join("r.json"),
    );
    ready(rx).await;
    let pid = recorded_pid(&cli, op.operation_id(), worker.call_id()).await;
    let err = op.complete().await.unwrap_err();
    assert!(matches!(err, Error::OpenCalls { .. }), "{err}");
    op.force_complete().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the other participant's worker call ends");
    assert!(worker.is_cancelled());
    assert!(!alive(pid));
    assert_none_left(&scope.marker);
}

pub async fn regular_call_cancelled_by_leave_runs_on_cleanup(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let worker = connect(b, "w").await;
    let s = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    let cleaned = Arc::new(AtomicUsize::new(0));
    let c = cleaned.clone();
    let call = s
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
    s.leave(true).await.unwrap();
    assert_eq!(cleaned.load(Ordering::SeqCst), 1, "on_cleanup ran once");
    let err = call.end(()).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled(_)), "{err}");
    drop(call);
    assert_eq!(cleaned.load(Ordering::SeqCst), 1, "and not again on drop");
    assert!(op.failure().is_none(), "a cancelled call fails nothing");
    let log = log_of(&cli, op.operation_id()).await;
    assert!(log.contains("CALL_CANCELLED"), "{log}");
    op.complete().await.unwrap();
}

pub async fn fenced_participant_cannot_log(b: &dyn Backend) {
    let cli = connect(b, "cli").await;
    let worker = connect(b, "w").await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let joined = worker
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
    joined
        .log("before the fence", tom_dist_ledger::LogLevel::Info)
        .await
        .unwrap();
    let me = joined.participant_id().clone();
    // Another participant declares `w` crashed; `w` has not written since.
    cli.store()
        .modify(op.operation_id(), &mut |d| {
            registered(d, &me)?.state = ParticipantState::Crashed;
            Ok(())
        })
        .await
        .unwrap();
    let err = joined
        .log("after the fence", tom_dist_ledger::LogLevel::Info)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let err = joined
        .log_message(0, "message after the fence")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let err = joined.debug_log("debug after the fence").await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let log = log_of(&cli, op.operation_id()).await;
    assert!(log.contains("before the fence"), "{log}");
    assert!(!log.contains("after the fence"), "{log}");
    let debug = cli
        .store()
        .read_log(
            op.operation_id(),
            tom_dist_ledger::store::LogKind::Debug,
            tom_dist_ledger::store::LogCursor::START,
        )
        .await
        .map(|(t, _)| t)
        .unwrap_or_default();
    assert!(!debug.contains("after the fence"), "{debug}");
    op.complete().await.unwrap();
}

/// A pid that belonged to a process that has exited.
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("run true");
    let pid = child.id() as i32;
    child.wait().expect("wait true");
    pid
}

pub async fn connect_recovers_abandoned_operations_when_asked(b: &dyn Backend) {
    let temps = tempfile::tempdir().unwrap();
    let temp = temps.path().join("left-behind.tmp");
    std::fs::write(&temp, "x").unwrap();
    // A participant recorded under a pid that is gone: its operation is abandoned.
    let pid = dead_pid();
    let ghost = connect_with(b, "ghost", |c| {
        c.pid(pid).heartbeat_interval(Duration::from_secs(3600))
    })
    .await;
    let op = ghost
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    op.register_temp_resource(&temp).await.unwrap();
    let id = op.operation_id().clone();
    ghost.dispose().await;

    // Without the option, connecting changes nothing.
    let plain = connect(b, "plain").await;
    assert!(plain.connect_recovery().is_none());
    assert!(plain.store().read(&id).await.is_ok());
    assert!(temp.exists());

    let recovering = connect_with(b, "next", |c| c.recover_abandoned(true)).await;
    let report = recovering.connect_recovery().expect("recovery ran");
    if !b.proves_provenance() {
        // Nothing proves the record is this user's: left alone, with the reason.
        let left: Vec<_> = report.left_alone.iter().map(|l| &l.operation_id).collect();
        assert_eq!(left, vec![&id]);
        assert!(report.recovered.is_empty());
        assert!(temp.exists(), "nothing is deleted without proof");
        // Asked for explicitly, recovery cleans it up.
        let explicit = recovering.recover().await.unwrap();
        let recovered: Vec<_> = explicit.recovered.iter().map(|r| &r.operation_id).collect();
        assert_eq!(recovered, vec![&id]);
        assert!(!temp.exists(), "the abandoned temp resource is deleted");
        return;
    }
    let recovered: Vec<_> = report.recovered.iter().map(|r| &r.operation_id).collect();
    assert_eq!(recovered, vec![&id]);
    assert!(!temp.exists(), "the abandoned temp resource is deleted");
    let data = recovering.store().read_archived(&id).await.unwrap();
    assert_eq!(data.operation_state, OperationState::Failed);
}
