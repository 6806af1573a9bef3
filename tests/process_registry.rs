//! The process-wide registry stops every worker group at once (the signal handler's
//! path), and kills them all without grace on a second signal. One test in its own
//! binary: the registry is shared by the whole process.

mod common;

use std::time::Duration;

use common::process::{BOUND, TestScope, read_until_ready, wait_until_async};
use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::Error;
use tom_dist_ledger::process::{
    RunOptions, Signal, StdioMode, StopEnd, StopReason, WorkerCommand, registry, run_stdio,
};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const IGNORE: &str = env!("CARGO_BIN_EXE_worker-ignore-term");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");

fn ready_worker(program: &str, args: &[&str], marker: &str) -> WorkerCommand {
    WorkerCommand::new(program)
        .args(args)
        .args(["--marker", marker])
        .stdout(StdioMode::Piped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_all_and_kill_all_reach_every_group() {
    let scope = TestScope::new();
    let mut workers = Vec::new();
    for (program, args) in [(HANG, &[][..]), (IGNORE, &[][..]), (TREE, &["2"][..])] {
        let mut w = ready_worker(program, args, &scope.marker)
            .spawn()
            .expect("spawn");
        let mut out = BufReader::new(w.take_stdout().expect("stdout")).lines();
        read_until_ready(&mut out).await;
        workers.push(w);
    }
    let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel();
    let marker = scope.marker.clone();
    let runner = tokio::spawn(async move {
        let opts = RunOptions::default().on_spawn(move |_| {
            let _ = spawned_tx.send(());
        });
        run_stdio(WorkerCommand::new(HANG).args(["--marker", &marker]), opts).await
    });
    spawned_rx.await.expect("runner spawned its worker");
    assert_eq!(registry().len(), 4);

    let grace = Duration::from_millis(400);
    let outcome = registry()
        .stop_all(Some(grace), StopReason::Shutdown(Signal::SIGINT))
        .await;
    assert_eq!(outcome.groups, 4);
    assert_eq!(outcome.end, StopEnd::Killed, "one worker ignores SIGTERM");
    assert!(outcome.elapsed >= grace);
    assert!(common::process::marked_pids(&scope.marker).is_empty());
    match runner.await.expect("runner task") {
        Err(Error::WorkerStopped { reason, .. }) => {
            assert_eq!(reason, StopReason::Shutdown(Signal::SIGINT));
        }
        other => panic!("unexpected {other:?}"),
    }
    for w in &mut workers {
        w.wait().await.expect("reap");
        assert_eq!(w.stop_reason(), Some(StopReason::Shutdown(Signal::SIGINT)));
    }
    drop(workers);
    assert_eq!(registry().len(), 0);

    // Second signal: kill everything at once.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut w = ready_worker(IGNORE, &[], &scope.marker)
            .spawn()
            .expect("spawn");
        let mut out = BufReader::new(w.take_stdout().expect("stdout")).lines();
        read_until_ready(&mut out).await;
        workers.push(w);
    }
    assert_eq!(registry().kill_all(StopReason::Shutdown(Signal::SIGINT)), 2);
    let marker = scope.marker.clone();
    wait_until_async("killed workers gone", BOUND, || {
        common::process::marked_pids(&marker).is_empty()
    })
    .await;
    for w in &mut workers {
        w.wait().await.expect("reap");
    }
    drop(workers);
    assert!(registry().is_empty());
    scope.assert_clean();
}
