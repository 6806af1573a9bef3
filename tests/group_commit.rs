//! Group commit: the frames of workers started while a write of their participant is in
//! flight go into one write, and every worker still gets its own frame.

mod common;

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use common::process::{TestScope, marked_pids, wait_until_async};
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{Connect, ExecWorker, Ledger, OperationOptions, WorkerResult};
use tom_dist_ledger::process::WorkerCommand;
use tom_dist_ledger::store::FileStore;

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const BOUND: Duration = Duration::from_secs(30);

/// The operation's lock is held from outside while workers start: the first frame write
/// waits for it, the others queue behind it, and once it is released they are written
/// in one more write, not one each.
#[tokio::test(flavor = "current_thread")]
async fn frames_queued_behind_a_waiting_write_go_into_one_write() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::connect(
        Connect::local(dir.path())
            .participant(ParticipantId::parse("cli").unwrap())
            .heartbeat_interval(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    let id = op.operation_id().clone();
    let before = ledger.read_live(&id).await.unwrap().seq;

    let paths = FileStore::open_existing(dir.path(), Default::default()).unwrap();
    let lock = File::options()
        .read(true)
        .write(true)
        .open(paths.lock_path(&id))
        .unwrap();
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
