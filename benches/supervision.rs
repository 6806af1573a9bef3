//! Supervision costs measured through the library, each next to a baseline in the same run.
//!
//! `cargo bench --bench supervision`
//!
//! 1. 1,000 `true` workers at concurrency 2 as exec workers of one operation (each a
//!    tracked call in the ledger, in its own process group, with the parent-death signal)
//!    next to a bare `tokio::process::Command` loop at concurrency 2.
//! 2. Ctrl+C to exit: a supervisor with 3 workers × 2 grandchildren gets SIGINT; time until
//!    it has exited and no process of the run is left, for workers that honour SIGTERM
//!    and for workers that ignore it (grace 1 s).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{Connect, ExecWorker, Ledger, OperationOptions};
use tom_dist_ledger::process::WorkerCommand;

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_worker-supervisor");
const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const WORKERS: usize = 1000;
const ROUNDS: usize = 3;

async fn bare(n: usize) -> Duration {
    let start = Instant::now();
    let lanes: Vec<_> = (0..2)
        .map(|lane| {
            tokio::spawn(async move {
                for _ in (lane..n).step_by(2) {
                    let status = tokio::process::Command::new("true")
                        .status()
                        .await
                        .expect("spawn");
                    assert!(status.success());
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.await.expect("lane");
    }
    start.elapsed()
}

async fn library(dir: &std::path::Path, n: usize) -> Duration {
    let ledger = Ledger::connect(
        Connect::local(dir).participant(ParticipantId::parse("bench").expect("valid id")),
    )
    .await
    .expect("connect");
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let start = Instant::now();
    let lanes: Vec<_> = (0..2)
        .map(|lane| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in (lane..n).step_by(2) {
                    let call = op.exec_stdio_worker(ExecWorker::<()>::with_decoder(
                        WorkerCommand::new("true"),
                        std::sync::Arc::new(|_: &str| Ok(())),
                    ));
                    call.join().await.expect("worker");
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.await.expect("lane");
    }
    let elapsed = start.elapsed();
    op.complete().await.expect("complete");
    elapsed
}

fn marked(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    let zombie = stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'));
                    !zombie && cmd.split(|b| *b == 0).any(|a| a == marker.as_bytes())
                })
                .count()
        })
        .unwrap_or(0)
}

async fn ctrl_c_once(ignore_term: bool, round: usize) -> Duration {
    let ledger = tempfile::tempdir().expect("dir");
    let temps = tempfile::tempdir().expect("dir");
    let marker = format!("bench-sup-{}-{round}-{ignore_term}", std::process::id());
    let mut cmd = tokio::process::Command::new(SUPERVISOR);
    cmd.args([
        "--ledger",
        ledger.path().to_str().expect("utf-8"),
        "--fork-tree",
        FORK_TREE,
    ])
    .args([
        "--temp-dir",
        temps.path().to_str().expect("utf-8"),
        "--workers",
        "3",
        "--tree",
        "2",
    ])
    .args(["--grace-ms", "1000", "--marker", &marker])
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    if ignore_term {
        cmd.arg("--ignore-term");
    }
    let mut child = cmd.spawn().expect("supervisor");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = lines.next_line().await.expect("read").expect("ready");
    assert!(ready.starts_with("ready"));
    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    let start = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let status = child.wait().await.expect("wait");
    while marked(&marker) > 0 {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = start.elapsed();
    assert_eq!(status.code(), Some(130));
    assert_eq!(std::fs::read_dir(temps.path()).expect("dir").count(), 0);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut b, mut l) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        b.push(bare(WORKERS).await);
        l.push(library(dir.path(), WORKERS).await);
    }
    let (b, l) = (median(b), median(l));
    println!(
        "{WORKERS} `true` workers at -j2: bare tokio {:.0} ms, library exec workers {:.0} ms, ratio {:.2}",
        b.as_secs_f64() * 1000.0,
        l.as_secs_f64() * 1000.0,
        l.as_secs_f64() / b.as_secs_f64()
    );
    for ignore in [false, true] {
        let mut samples = Vec::new();
        for round in 0..10 {
            samples.push(ctrl_c_once(ignore, round).await);
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "SIGINT to exit with every group gone, workers {}: min {:.1} ms, median {:.1} ms, worst {:.1} ms{}",
            if ignore {
                "ignoring SIGTERM (grace 1000 ms)"
            } else {
                "honouring SIGTERM"
            },
            ms(samples[0]),
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() - 1]),
            if ignore { "" } else { " (target under 300 ms)" }
        );
    }
}
