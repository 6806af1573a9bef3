//! Spawn overhead of the process layer: 1,000 `true` workers at concurrency 2, through
//! `WorkerCommand::spawn` + `wait` (with and without the parent-death hook), next to a
//! bare `tokio::process::Command` loop and `xargs -P2 -n1 true`, all in the same run.
//!
//! Run: `cargo bench --bench process_spawn`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tom_dist_ledger::process::{EscapeProof, StdioMode, WorkerCommand};

const N: usize = 1000;
const CONCURRENCY: usize = 2;
const ROUNDS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Bare,
    LayerFast,
    LayerParentDeath,
    LayerEscapeProof,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Bare => "bare tokio::process::Command",
            Way::LayerFast => "WorkerCommand, no parent-death signal (no pre_exec)",
            Way::LayerParentDeath => "WorkerCommand, default (parent-death signal)",
            Way::LayerEscapeProof => "WorkerCommand, escape-proof (cgroup)",
        }
    }
}

async fn one(way: Way) {
    match way {
        Way::Bare => {
            let status = tokio::process::Command::new("true")
                .status()
                .await
                .expect("spawn true");
            assert!(status.success());
        }
        _ => {
            let cmd = WorkerCommand::new("true")
                .stdout(StdioMode::Null)
                .stderr(StdioMode::Null);
            let cmd = match way {
                Way::LayerFast => cmd.parent_death_signal(None),
                Way::LayerEscapeProof => cmd.escape_mode(EscapeProof::Cgroup),
                _ => cmd,
            };
            let mut worker = cmd.spawn().expect("spawn true");
            let status = worker.wait().await.expect("wait");
            assert!(status.success());
            if way == Way::LayerEscapeProof {
                // Remove the cgroup before the next one, as a run would.
                worker.stop(Duration::from_secs(5)).await;
            }
        }
    }
}

async fn run(way: Way, n: usize) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                one(way).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

fn xargs(n: usize) -> Duration {
    let script = format!("seq {n} | xargs -P{CONCURRENCY} -n1 true");
    let start = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("run xargs");
    assert!(status.success());
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut ways = vec![Way::Bare, Way::LayerFast, Way::LayerParentDeath];
    let cgroups = runtime.block_on(async {
        WorkerCommand::new("true")
            .escape_mode(EscapeProof::Cgroup)
            .spawn()
            .is_ok()
    });
    if cgroups {
        ways.push(Way::LayerEscapeProof);
    }
    runtime.block_on(async {
        for &way in &ways {
            run(way, 50).await;
        }
    });
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    let mut xargs_times = Vec::new();
    for _ in 0..ROUNDS {
        xargs_times.push(xargs(N));
        for (i, &way) in ways.iter().enumerate() {
            times[i].push(runtime.block_on(run(way, N)));
        }
    }
    let xargs_t = median(xargs_times);
    let bare_t = median(times[0].clone());
    println!("{N} `true` workers at concurrency {CONCURRENCY}, median of {ROUNDS} rounds");
    println!();
    println!("| way | total | per worker | vs bare tokio | vs xargs -P2 |");
    println!("|---|---|---|---|---|");
    println!(
        "| `xargs -P2 -n1 true` | {:.0} ms | {:.0} µs | {:.2}× | 1.00× |",
        xargs_t.as_secs_f64() * 1e3,
        xargs_t.as_secs_f64() * 1e6 / N as f64,
        xargs_t.as_secs_f64() / bare_t.as_secs_f64(),
    );
    for (i, &way) in ways.iter().enumerate() {
        let t = median(times[i].clone());
        println!(
            "| {} | {:.0} ms | {:.0} µs | {:.2}× | {:.2}× |",
            way.label(),
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e6 / N as f64,
            t.as_secs_f64() / bare_t.as_secs_f64(),
            t.as_secs_f64() / xargs_t.as_secs_f64(),
        );
    }
}
