//! Real processes contending for one operation of a file ledger.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use common::PATIENCE;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tom_dist_ledger::ids::{OperationId, ParticipantId};
use tom_dist_ledger::model::{LedgerData, time};
use tom_dist_ledger::store::{FileStore, FileStoreOptions, LogKind, Store};

const CONTENDER: &str = env!("CARGO_BIN_EXE_worker-ledger-contender");
const PROCESSES: usize = 8;
const CALLS: usize = 250;

/// Start the contender in `mode`; it waits for a line on stdin before it begins. Killed if
/// the test fails before it ends, so no process outlives the test.
fn spawn(args: &[&str]) -> Child {
    Command::new(CONTENDER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start contender")
}

async fn go(child: &mut Child) {
    let stdin = child.stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"go\n").await.unwrap();
    stdin.flush().await.unwrap();
}

/// Wait for the child (closing its stdin first) and parse the JSON line it printed.
async fn finish(mut child: Child) -> Value {
    drop(child.stdin.take());
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let status = tokio::time::timeout(PATIENCE * 2, async {
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a.and(b).unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("contender finished");
    assert!(
        status.success(),
        "contender failed: {status}; stderr: {err}"
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("report {out:?}: {e}"))
}

async fn create(dir: &Path, id: &str) -> (FileStore, OperationId) {
    let store = FileStore::open(dir, FileStoreOptions::default()).unwrap();
    let op = OperationId::parse(id).unwrap();
    let data = LedgerData::new(
        op.clone(),
        ParticipantId::parse("cli").unwrap(),
        time::now(),
    );
    store.create(&data).await.unwrap();
    (store, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_lose_no_frame_and_readers_never_see_half_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, op) = create(dir.path(), "op_contention").await;
    let dir_arg = dir.path().to_str().unwrap();

    let mut reader = spawn(&["read", dir_arg, op.as_str()]);
    let calls = CALLS.to_string();
    let names: Vec<String> = (0..PROCESSES).map(|n| format!("worker-{n}")).collect();
    let mut contenders: Vec<Child> = names
        .iter()
        .map(|name| spawn(&["calls", dir_arg, op.as_str(), name, &calls]))
        .collect();
    go(&mut reader).await;
    let start = Instant::now();
    for child in &mut contenders {
        go(child).await;
    }
    for child in contenders {
        assert_eq!(finish(child).await["calls"], CALLS);
    }
    let elapsed = start.elapsed();
    let seen = finish(reader).await;

    let data = store.read(&op).await.unwrap();
    assert!(
        data.call_frames.is_empty(),
        "frames left: {:?}",
        data.call_frames
    );
    // Every start and every end was one write; joining and leaving are two more per
    // process, and a heartbeat may have landed in between.
    let writes = (2 * PROCESSES * CALLS + 2 * PROCESSES) as u64;
    assert!(
        (writes..=writes + PROCESSES as u64).contains(&data.seq),
        "{} writes for {writes} changes",
        data.seq
    );
    assert!(
        data.participants.is_empty(),
        "every contender left in order and was dropped from the registry: {:?}",
        data.participants
    );
    assert_eq!(data.participants_left, PROCESSES as u64);

    let (log, _) = store
        .read_log(&op, LogKind::Main, tom_dist_ledger::store::LogCursor::START)
        .await
        .unwrap();
    let ids = |event: &str| -> (usize, BTreeSet<String>) {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(event)).collect();
        let ids = lines
            .iter()
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("callId=")))
            .map(str::to_owned)
            .collect();
        (lines.len(), ids)
    };
    let (started, started_ids) = ids(" CALL_STARTED callId=");
    let (ended, ended_ids) = ids(" CALL_ENDED callId=");
    assert_eq!((started, ended), (PROCESSES * CALLS, PROCESSES * CALLS));
    assert_eq!(started_ids.len(), PROCESSES * CALLS, "call ids are unique");
    assert_eq!(started_ids, ended_ids);
    assert_eq!(
        log.lines().count(),
        2 * PROCESSES * CALLS + 2 * PROCESSES,
        "no line torn or merged (calls, plus a join and a leave per process)"
    );
    assert!(
        log.lines()
            .all(|l| l.len() > 25 && l.as_bytes()[24] == b' ' && l.contains(" [INFO] ")),
        "every line is `{{timestamp}} [LEVEL] message`"
    );

    assert_eq!(seen["invalid"], 0, "reader saw an invalid file: {seen}");
    assert_eq!(
        seen["seq_backwards"], 0,
        "reader saw time go backwards: {seen}"
    );
    assert!(
        seen["snapshots"].as_u64().unwrap() >= 100,
        "reader read too little: {seen}"
    );
    assert!(
        seen["seq_changes"].as_u64().unwrap() >= 10,
        "reader saw too few writes: {seen}"
    );
    eprintln!(
        "{} calls from {PROCESSES} processes in {elapsed:?}; reader: {seen}",
        PROCESSES * CALLS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_writes_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let (store, op) = create(dir.path(), "op_watched").await;
    let mut rx = store.watch(&op).unwrap();
    let mut child = spawn(&[
        "calls",
        dir.path().to_str().unwrap(),
        op.as_str(),
        "other",
        "1",
    ]);
    go(&mut child).await;
    tokio::time::timeout(PATIENCE, rx.next())
        .await
        .expect("no notification of the other process's write")
        .expect("the watch ended");
    finish(child).await;
    // Join, the call's start and end, leave (and perhaps a heartbeat).
    assert!((4..=5).contains(&store.read(&op).await.unwrap().seq));
}
