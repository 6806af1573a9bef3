//! The remote ledger (SPEC §13 remote), in one run against a real `tom-ledger serve`
//! over loopback:
//!
//! - throughput: 8 client processes (`worker-ledger-peer calls`) each join one operation
//!   and make N calls (start + end), through the server and, in the same round, through
//!   the file store directly; calls per second and the ratio (target: remote at least
//!   0.5× the file store). Wall time from spawning the 8 processes to their exit, the
//!   same for both.
//! - abort push: a remote participant waiting on `aborted()` prints when it saw the
//!   abort another client set (target under 100 ms).
//! - detection: a remote participant holding a call is SIGKILLed (seen through its pid,
//!   it is on this machine), or SIGSTOPped (alive, silent: only the server's clock finds
//!   it stale and pushes it); the time until the initiator's `failed()` (target: within
//!   the stale threshold + 1 s).
//!
//! `cargo bench --bench remote`; settings: `REMOTE_BENCH_CALLS` per process (default
//! 200), `REMOTE_BENCH_ROUNDS` (default 3), `REMOTE_BENCH_RUNS` for the latencies
//! (default 10).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, Lines};
use tokio::process::ChildStdout;
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{Connect, Ledger, OperationOptions};

#[path = "common/serve.rs"]
mod serve;

use serve::{Server, env_or, now_nanos};

const PEER: &str = env!("CARGO_BIN_EXE_worker-ledger-peer");
const PROCESSES: usize = 8;
const STALE: Duration = Duration::from_secs(2);

/// Where participants connect: a ledger directory or a server.
#[derive(Clone)]
enum Target {
    File(std::path::PathBuf),
    Remote { url: String, token: String },
}

impl Target {
    fn connect(&self, participant: &str) -> Connect {
        let connect = match self {
            Target::File(dir) => Connect::local(dir),
            Target::Remote { url, token } => Connect::remote(url).token(token),
        };
        connect
            .participant(ParticipantId::parse(participant).expect("id"))
            .heartbeat_interval(Duration::from_millis(500))
            .stale_threshold(STALE)
            .cleanup_wait(Duration::from_secs(5))
    }

    /// `--ledger` of a peer, and its token arguments.
    fn peer_args(&self) -> Vec<String> {
        match self {
            Target::File(dir) => vec!["--ledger".into(), dir.display().to_string()],
            Target::Remote { url, token } => vec![
                "--ledger".into(),
                url.clone(),
                "--token".into(),
                token.clone(),
            ],
        }
    }
}

/// Calls per second of 8 processes making `calls` calls each.
async fn throughput(target: &Target, calls: usize) -> f64 {
    let ledger = Ledger::connect(target.connect("bench"))
        .await
        .expect("connect");
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let start = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(PEER)
                .arg("calls")
                .args(target.peer_args())
                .args(["--op", op.operation_id().as_str()])
                .args(["--participant", &format!("c{i}"), "--n", &calls.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .expect("peer")
        })
        .collect();
    for mut child in children {
        let status = child.wait().expect("wait peer");
        assert!(status.success(), "a client failed: {status}");
    }
    let secs = start.elapsed().as_secs_f64();
    op.complete().await.expect("complete");
    ledger.dispose().await;
    (PROCESSES * calls) as f64 / secs
}

async fn ready_peer(
    target: &Target,
    mode: &str,
    op: &tom_dist_ledger::OperationId,
    extra: &[&str],
) -> (
    tokio::process::Child,
    Lines<tokio::io::BufReader<ChildStdout>>,
) {
    let mut child = tokio::process::Command::new(PEER)
        .arg(mode)
        .args(target.peer_args())
        .args(["--op", op.as_str(), "--participant", "remote"])
        .args(extra)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("peer");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some("ready")
    );
    (child, lines)
}

async fn abort_once(target: &Target) -> Duration {
    let ledger = Ledger::connect(target.connect("bench"))
        .await
        .expect("connect");
    let other = Ledger::connect(target.connect("other"))
        .await
        .expect("connect");
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let (mut child, mut lines) = ready_peer(target, "wait-abort", op.operation_id(), &[]).await;
    let sent = now_nanos();
    other
        .abort_operation(op.operation_id())
        .await
        .expect("abort");
    let line = lines.next_line().await.expect("read").expect("line");
    let seen: u128 = line.trim_start_matches("aborted ").parse().expect("nanos");
    let _ = child.wait().await;
    op.complete().await.expect("complete");
    ledger.dispose().await;
    other.dispose().await;
    Duration::from_nanos(seen.saturating_sub(sent) as u64)
}

async fn detection_once(target: &Target, signal: nix::sys::signal::Signal) -> Duration {
    let ledger = Ledger::connect(target.connect("bench"))
        .await
        .expect("connect");
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let stale = STALE.as_millis().to_string();
    let (mut child, _lines) = ready_peer(
        target,
        "hang",
        op.operation_id(),
        &["--hb-ms", "500", "--stale-ms", &stale],
    )
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    let hit = Instant::now();
    nix::sys::signal::kill(pid, signal).expect("signal");
    op.failed().await;
    let latency = hit.elapsed();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait().await;
    let store = ledger.store().clone();
    while store.read_archived(op.operation_id()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ledger.dispose().await;
    latency
}

fn report(name: &str, mut samples: Vec<Duration>, target: &str) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: runs {} min {:.1} ms, median {:.1} ms, worst {:.1} ms ({target})",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    );
}

#[tokio::main]
async fn main() {
    let calls: usize = env_or("REMOTE_BENCH_CALLS", 200);
    let rounds: usize = env_or("REMOTE_BENCH_ROUNDS", 3);
    let runs: usize = env_or("REMOTE_BENCH_RUNS", 10);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let remote = Target::Remote {
        url: server.url.clone(),
        token: server.token.clone(),
    };
    let file = Target::File(dir.path().join("direct"));

    let mut ratios = Vec::new();
    for round in 0..rounds {
        let direct = throughput(&file, calls).await;
        let served = throughput(&remote, calls).await;
        let ratio = served / direct;
        println!(
            "round {round}: {PROCESSES} processes x {calls} calls: file store {direct:.0} calls/s, through serve {served:.0} calls/s, ratio {ratio:.2}"
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "throughput ratio (serve / file store), median of {rounds}: {:.2} (target at least 0.5)",
        ratios[ratios.len() / 2]
    );

    let mut abort = Vec::new();
    for _ in 0..runs {
        abort.push(abort_once(&remote).await);
    }
    report(
        "abort pushed to a remote participant",
        abort,
        "target under 100 ms",
    );

    let bound = format!(
        "target within {} ms",
        (STALE + Duration::from_secs(1)).as_millis()
    );
    let mut killed = Vec::new();
    let mut stopped = Vec::new();
    for _ in 0..runs.min(5) {
        killed.push(detection_once(&remote, nix::sys::signal::Signal::SIGKILL).await);
        stopped.push(detection_once(&remote, nix::sys::signal::Signal::SIGSTOP).await);
    }
    report("SIGKILLed remote participant detected", killed, &bound);
    report(
        "SIGSTOPped remote participant expired by the server's clock",
        stopped,
        &bound,
    );
}
