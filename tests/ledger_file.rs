//! The ledger behaviour suite on the embedded file store, and what the ledger leaves in
//! the ledger directory (files only this backend has).

mod common;
mod ledger_suite;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_suite::{Backend, connect, connect_with, create_and_beat, guarded, wait_until};
use tom_dist_ledger::ledger::{CallOptions, OperationCallback, OperationOptions};
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::{Connect, Error};

struct FileBackend {
    dir: tempfile::TempDir,
}

impl FileBackend {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Backend for FileBackend {
    fn connect(&self, _participant: &str) -> Connect {
        Connect::local(self.dir.path())
    }

    fn shared_location(&self) -> Option<(&'static str, String)> {
        let dir = std::path::absolute(self.dir.path()).expect("absolute temp dir");
        Some(("TOM_LEDGER_DIR", dir.to_string_lossy().into_owned()))
    }
}

ledger_suite!(FileBackend::new());

/// Creating an operation makes its file and lock file; completing it moves the file,
/// log and trail into `backup/{op}/` and leaves neither behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_complete_lay_out_the_ledger_directory() {
    let b = FileBackend::new();
    guarded(async {
        let ledger = connect(&b, "cli").await;
        let op = ledger
            .create_operation(OperationOptions::new())
            .await
            .unwrap();
        let id = op.operation_id().clone();
        let dir = b.dir();
        assert!(dir.join(format!("{id}.operation.json")).is_file());
        assert!(dir.join(format!("{id}.operation.json.lock")).exists());
        let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
        call.end(()).await.unwrap();
        op.complete().await.unwrap();
        let backup = dir.join("backup").join(id.as_str());
        assert!(backup.join("operation.json").is_file());
        assert!(backup.join("operation.log").is_file());
        assert!(backup.join("trail").is_dir());
        assert!(!dir.join(format!("{id}.operation.json")).exists());
        assert!(!dir.join(format!("{id}.operation.json.lock")).exists());
    })
    .await;
}

/// Starting a call leaves the state before it in the trail, numbered by the new seq.
/// (Heartbeats move `seq` too but leave no trail entry: the first beat, which runs at
/// once on another task, is waited for and the next one is an hour away, so the call's
/// write is the last one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_start_leaves_the_state_before_it_in_the_trail() {
    let b = FileBackend::new();
    guarded(async {
        let ledger = connect_with(&b, "cli", |c| {
            c.heartbeat_interval(Duration::from_secs(3600))
        })
        .await;
        let op = create_and_beat(&ledger, OperationCallback::new()).await;
        op.stop_heartbeat();
        let call = op.start_call::<()>(CallOptions::new()).await.unwrap();
        let data = ledger.store().read(op.operation_id()).await.unwrap();
        // The newest trail entry (should a beat still land after the start, it moves the
        // revision on but leaves no trail entry).
        let trail_dir = b.dir().join(format!("{}_trail", op.operation_id()));
        let newest = std::fs::read_dir(&trail_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let seq = name.split('_').next()?.parse::<u64>().ok()?;
                Some((seq, e.path()))
            })
            .max()
            .expect("a trail entry");
        assert!(newest.0 <= data.seq, "{newest:?} after {}", data.seq);
        let snapshot = LedgerData::from_json(&std::fs::read(&newest.1).unwrap()).unwrap();
        assert_eq!(snapshot.seq, newest.0 - 1);
        assert!(
            snapshot.call_frames.is_empty(),
            "the state before the call start"
        );
        call.end(()).await.unwrap();
        op.complete().await.unwrap();
    })
    .await;
}

/// A corrupt operation file fails the next write with a one-line `Corrupt` error and is
/// left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_operation_file_fails_writes_clearly() {
    let b = FileBackend::new();
    guarded(corrupt_operation_file_is_a_clear_error(&b)).await;
}

async fn corrupt_operation_file_is_a_clear_error(b: &FileBackend) {
    let dir = b.dir();
    let ledger = connect_with(b, "cli", |c| {
        c.heartbeat_interval(Duration::from_secs(3600))
    })
    .await;
    let beats = Arc::new(Mutex::new(0));
    let n = beats.clone();
    let op = ledger
        .create_operation(OperationOptions::new().callback(
            OperationCallback::new().on_heartbeat_success(move |_, _| *n.lock().unwrap() += 1),
        ))
        .await
        .unwrap();
    // Let the first beat land; the next one is an hour away.
    wait_until("first heartbeat", || {
        let beats = beats.clone();
        async move { *beats.lock().unwrap() >= 1 }
    })
    .await;
    op.stop_heartbeat();
    let path = dir.join(format!("{}.operation.json", op.operation_id()));
    let garbage = b"{\"operationId\": \"x\", \"callFrames\": [";
    std::fs::write(&path, garbage).unwrap();
    let err = op.start_call::<()>(CallOptions::new()).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("corrupt ledger file `"), "{msg}");
    assert!(!msg.contains('\n'));
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "unchanged");
    ledger.dispose().await;
}
