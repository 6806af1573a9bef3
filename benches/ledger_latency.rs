//! Abort propagation and crash detection between real processes on one machine.
//!
//! `cargo bench --bench ledger_latency`
//!
//! - abort: the initiator sets the abort flag; a peer process waiting on `aborted()` prints
//!   the time it saw it. 20 runs.
//! - crash: a peer process holding a call is SIGKILLed; the time until the initiator's
//!   `failed()` resolves. 20 runs.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{Connect, Ledger, OperationOptions};

const PEER: &str = env!("CARGO_BIN_EXE_worker-ledger-peer");
const RUNS: usize = 20;

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn ledger(dir: &std::path::Path) -> Ledger {
    Ledger::connect(
        Connect::local(dir)
            .participant(ParticipantId::parse("bench").expect("valid id"))
            .heartbeat_interval(Duration::from_secs(3600))
            .cleanup_wait(Duration::from_secs(5)),
    )
    .await
    .expect("connect")
}

/// A peer process in `mode` on the operation, once it has said `ready`.
async fn ready_peer(
    mode: &str,
    dir: &std::path::Path,
    op: &tom_dist_ledger::OperationId,
) -> (tokio::process::Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(PEER)
        .args([
            mode,
            "--ledger",
            dir.to_str().expect("utf-8"),
            "--op",
            op.as_str(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("peer");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some("ready")
    );
    (child, lines)
}

async fn abort_once(dir: &std::path::Path) -> Duration {
    let ledger = ledger(dir).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let (mut child, mut lines) = ready_peer("wait-abort", dir, op.operation_id()).await;
    let sent = now_nanos();
    op.set_abort_flag(true).await.expect("abort");
    let line = lines.next_line().await.expect("read").expect("line");
    let seen: u128 = line.trim_start_matches("aborted ").parse().expect("nanos");
    let _ = child.wait().await;
    op.complete().await.expect("complete");
    Duration::from_nanos(seen.saturating_sub(sent) as u64)
}

async fn crash_once(dir: &std::path::Path) -> Duration {
    let ledger = ledger(dir).await;
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let (mut child, _lines) = ready_peer("hang", dir, op.operation_id()).await;
    let killed = Instant::now();
    child.start_kill().expect("kill");
    op.failed().await;
    let latency = killed.elapsed();
    let _ = child.wait().await;
    let store = ledger.store().clone();
    while store.read_archived(op.operation_id()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latency
}

fn report(name: &str, mut samples: Vec<Duration>, target: Duration) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: runs {} min {:.2} ms, median {:.2} ms, p90 {:.2} ms, worst {:.2} ms (target under {} ms)",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1]),
        target.as_millis()
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut abort = Vec::new();
    for _ in 0..RUNS {
        abort.push(abort_once(dir.path()).await);
    }
    report(
        "abort propagation to a local participant",
        abort,
        Duration::from_millis(200),
    );
    let mut crash = Vec::new();
    for _ in 0..RUNS {
        crash.push(crash_once(dir.path()).await);
    }
    report(
        "SIGKILL of a local participant to the peer's failed()",
        crash,
        Duration::from_millis(500),
    );
}
