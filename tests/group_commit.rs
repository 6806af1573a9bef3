//! Group commit: the frames of workers started while a write of their participant is in
//! flight go into one write, and every worker still gets its own frame.

mod common;

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use common::process::{TestScope, marked_pids, wait_until_async};
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{
    CallOptions, Connect, ExecWorker, Ledger, OperationOptions, WorkerResult,
};
use tom_dist_ledger::process::WorkerCommand;
use tom_dist_ledger::store::{FileStore, FileStoreOptions};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const EXIT: &str = env!("CARGO_BIN_EXE_worker-exit");
const BOUND: Duration = Duration::from_secs(30);

/// The operation's lock is held from outside while workers start: the first frame write
/// waits for it, the others queue behind it, and once it is released they are written
/// in one more write, not one each.
#[tokio::test(flavor = "current_thread")]
async fn frames_queued_behind_a_waiting_write_go_into_one_write() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let (ledger, op, lock) =
        ledger_with_lock(dir.path(), FileStoreOptions::default().lock_timeout).await;
    let id = op.operation_id().clone();
    let before = ledger.read_live(&id).await.unwrap().seq;
    lock.lock().unwrap();

    let n = 12;
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let command = WorkerCommand::new(HANG).arg("--marker").arg(&scope.marker);
            op.exec_worker(
                ExecWorker::<()>::with_decoder(command, Arc::new(|_| Ok(())))
                    .result(WorkerResult::ExitStatus),
            )
        })
        .collect();
    wait_until_async("every worker to run", BOUND, || {
        marked_pids(&scope.marker).len() == n
    })
    .await;
    // Their frame writes are queued right after each start, on this thread.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        ledger.read_live(&id).await.unwrap().seq,
        before,
        "nothing is written while the lock is held"
    );
    lock.unlock().unwrap();

    let mut written = ledger.read_live(&id).await.unwrap();
    wait_until_async("every frame to be written", BOUND, || {
        let data = futures_read(&ledger, &id);
        let done = data.as_ref().is_some_and(|d| d.call_frames.len() == n);
        if let Some(d) = data {
            written = d;
        }
        done
    })
    .await;
    assert!(
        written.call_frames.iter().all(|f| f.process.is_some()),
        "every frame records its worker"
    );
    assert!(
        written.seq - before <= 2,
        "{n} frames took {} writes",
        written.seq - before
    );

    for call in &calls {
        call.cancel().await;
    }
    op.complete().await.unwrap();
    ledger.dispose().await;
    scope.assert_clean();
}

/// A ledger of its own in `dir` (no beats during the test), with an operation, and the
/// operation's lock file, to hold from outside.
async fn ledger_with_lock(
    dir: &std::path::Path,
    lock_timeout: Duration,
) -> (Ledger, tom_dist_ledger::Operation, File) {
    let ledger = Ledger::connect(
        Connect::local(dir)
            .participant(ParticipantId::parse("cli").unwrap())
            .heartbeat_interval(Duration::from_secs(3600))
            .lock_timeout(lock_timeout),
    )
    .await
    .unwrap();
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let paths = FileStore::open_existing(dir, Default::default()).unwrap();
    let lock = File::options()
        .read(true)
        .write(true)
        .open(paths.lock_path(op.operation_id()))
        .unwrap();
    (ledger, op, lock)
}

/// A worker that exits `code` at once, run as a call whose failure is its own (not the
/// operation's, as `run` starts them); the flag says `on_running` ran.
fn exit_worker(
    op: &tom_dist_ledger::Operation,
    code: i32,
    running: Arc<std::sync::atomic::AtomicBool>,
) -> tom_dist_ledger::SpawnedCall<()> {
    let command = WorkerCommand::new(EXIT).arg(code.to_string());
    op.exec_worker(
        ExecWorker::<()>::with_decoder(command, Arc::new(|_| Ok(())))
            .result(WorkerResult::ExitStatus)
            .call(CallOptions::new().fail_on_crash(false))
            .on_running(move |_, _| running.store(true, std::sync::atomic::Ordering::SeqCst)),
    )
}

/// A worker that ends while its frame write waits for the lock is decided on how it
/// ended without waiting for that write (a scheduler starts the next worker on it);
/// `on_running` has run by then. The write and the end are recorded once the lock is
/// free, and the call's end waits for them.
#[tokio::test(flavor = "current_thread")]
async fn worker_ending_before_its_frame_is_written_is_decided_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, op, lock) = ledger_with_lock(dir.path(), Duration::from_secs(60)).await;
    let id = op.operation_id().clone();
    let before = ledger.read_live(&id).await.unwrap().seq;
    lock.lock().unwrap();

    for (code, succeeds) in [(0, true), (3, false)] {
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let call = exit_worker(&op, code, running.clone());
        tokio::time::timeout(BOUND, call.wait_decided())
            .await
            .expect("decided while its frame write waits for the lock");
        assert_eq!(call.is_success(), succeeds, "exit {code}: {call}");
        assert!(running.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            ledger.read_live(&id).await.unwrap().seq,
            before,
            "nothing is written while the lock is held"
        );
        // Its end waits for the frame write.
        let mut ended = std::pin::pin!(call.wait());
        for _ in 0..10 {
            tokio::task::yield_now().await;
            assert!(
                futures_util::FutureExt::now_or_never(ended.as_mut()).is_none(),
                "the call ended before its frame was written"
            );
        }
    }
    // Both ended by now; their lines, written once the lock is free, keep the time of
    // the events (the clock moves on first, so a line stamped when written would be later).
    let ended_by = chrono::Utc::now();
    while chrono::Utc::now() < ended_by + chrono::Duration::milliseconds(5) {
        tokio::task::yield_now().await;
    }
    lock.unlock().unwrap();
    tokio::time::timeout(BOUND, op.complete())
        .await
        .expect("complete waits for the records")
        .unwrap();
    let log = ledger.read_log(&id).await.unwrap();
    assert_eq!(log.matches("CALL_SPAWNED").count(), 2, "{log}");
    assert_eq!(log.matches("CALL_COMPLETED").count(), 1, "{log}");
    assert_eq!(log.matches("CALL_FAILED").count(), 1, "{log}");
    for line in log.lines().filter(|l| {
        ["CALL_SPAWNED", "CALL_COMPLETED", "CALL_FAILED"]
            .iter()
            .any(|k| l.contains(k))
    }) {
        let stamp = line.split(' ').next().unwrap_or_default();
        let at = chrono::DateTime::parse_from_rfc3339(stamp).expect("a timestamp");
        assert!(
            at <= ended_by,
            "stamped when written, not when it happened: {line}"
        );
    }
    ledger.dispose().await;
}

/// A worker that ended before its frame write was answered, whose write is then refused
/// (here: the lock is never had), ends as cancelled, though its outcome went out as a
/// success: the refusal is answered with the call's end.
#[tokio::test(flavor = "current_thread")]
async fn refused_frame_write_after_the_worker_ended_ends_the_call_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    // The worker exits long before the lock wait gives up (it exits at once); the refusal
    // then costs a lock wait for the frame and one for its removal.
    let (ledger, op, lock) = ledger_with_lock(dir.path(), Duration::from_secs(5)).await;
    let id = op.operation_id().clone();
    lock.lock().unwrap();

    let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let call = exit_worker(&op, 0, running);
    tokio::time::timeout(BOUND, call.wait_decided())
        .await
        .expect("decided while its frame write waits for the lock");
    assert!(call.is_success(), "{call}");
    let joined = tokio::time::timeout(BOUND * 4, call.join())
        .await
        .expect("the refused write is answered");
    assert!(
        matches!(joined, Err(tom_dist_ledger::Error::Cancelled(_))),
        "{joined:?}"
    );
    assert!(call.is_cancelled() && !call.is_success(), "{call}");
    lock.unlock().unwrap();
    let data = ledger.read_live(&id).await.unwrap();
    assert!(data.call_frames.is_empty(), "{:?}", data.call_frames);
    op.complete().await.unwrap();
    ledger.dispose().await;
}

/// The operation as stored now, read synchronously (the wait's condition is not async).
fn futures_read(
    ledger: &Ledger,
    id: &tom_dist_ledger::OperationId,
) -> Option<tom_dist_ledger::model::LedgerData> {
    let store = FileStore::open_existing(
        match ledger.store().location() {
            tom_dist_ledger::store::StoreLocation::Dir(d) => d,
            _ => return None,
        },
        Default::default(),
    )
    .ok()?;
    let bytes = std::fs::read(store.operation_path(id)).ok()?;
    tom_dist_ledger::model::LedgerData::from_json(&bytes).ok()
}

/// A caller that gives up on its change while the write it runs itself waits for the
/// lock (its future dropped, as a timeout drops it) does not strand this participant's
/// queue: the write goes on without it once the lock is free, and the next change is
/// written and answered.
#[tokio::test(flavor = "current_thread")]
async fn a_change_given_up_during_its_write_leaves_the_queue_working() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, op, lock) = ledger_with_lock(dir.path(), Duration::from_secs(60)).await;
    let id = op.operation_id().clone();
    let first = op.start_call::<u32>(CallOptions::new()).await.unwrap();
    lock.lock().unwrap();
    // The end writes inline: it is polled at once and waits for the lock until dropped.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), first.end(1)).await;
    assert!(
        gave_up.is_err(),
        "the end was written while the lock was held"
    );
    lock.unlock().unwrap();

    let second = tokio::time::timeout(BOUND, op.start_call::<u32>(CallOptions::new()))
        .await
        .expect("the next change of this participant is written")
        .unwrap();
    let data = ledger.read_live(&id).await.unwrap();
    let frames: Vec<_> = data.call_frames.iter().map(|f| f.call_id.clone()).collect();
    assert_eq!(
        frames,
        vec![second.call_id().clone()],
        "the given-up end was written too"
    );
    second.end(2).await.unwrap();
    op.complete().await.unwrap();
    ledger.dispose().await;
}
