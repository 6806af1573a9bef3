//! Spawn overhead of the process layer: 1,000 `true` workers at concurrency 2, through
//! `WorkerCommand::spawn` + `wait` (without a parent-death signal; with it, by either
//! spawn method; escape-proof), next to a bare `tokio::process::Command` loop and
//! `xargs -P2 -n1 true`, all in the same run.
//!
//! The workers are spawned from the two worker threads of a multi-thread runtime, so a
//! worker with a parent-death signal is created on the spawner thread; one more row spawns
//! them from the main thread (two loops on a current-thread runtime), as the CLI does,
//! where no hop to the spawner thread is needed.
//!
//! Run: `cargo bench --bench process_spawn`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tom_dist_ledger::process::{EscapeProof, SpawnMethod, StdioMode, WorkerCommand};

const N: usize = 1000;
const CONCURRENCY: usize = 2;
const ROUNDS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Bare,
    LayerFast,
    LayerParentDeath,
    LayerParentDeathFork,
    LayerMainThread,
    LayerEscapeProof,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Bare => "bare tokio::process::Command",
            Way::LayerFast => "WorkerCommand, no parent-death signal (no pre_exec)",
            Way::LayerParentDeath => "WorkerCommand, default (parent-death signal, vfork)",
            Way::LayerParentDeathFork => "WorkerCommand, parent-death signal, fork + pre_exec",
            Way::LayerMainThread => "WorkerCommand, default, spawned on the main thread",
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
                Way::LayerParentDeathFork => cmd.spawn_method(SpawnMethod::Fork),
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

/// `CONCURRENCY` loops of default workers on the calling thread.
async fn run_here(n: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let slot = || async {
        while next.fetch_add(1, Ordering::Relaxed) < n {
            one(Way::LayerParentDeath).await;
        }
    };
    let slots: Vec<_> = (0..CONCURRENCY).map(|_| Box::pin(slot())).collect();
    let mut slots = slots;
    std::future::poll_fn(|cx| {
        slots.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if slots.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
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
    let mut ways = vec![
        Way::Bare,
        Way::LayerFast,
        Way::LayerParentDeath,
        Way::LayerParentDeathFork,
        Way::LayerMainThread,
    ];
    let here = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let measure = |way: Way, n: usize| match way {
        Way::LayerMainThread => here.block_on(run_here(n)),
        _ => runtime.block_on(run(way, n)),
    };
    let cgroups = runtime.block_on(async {
        WorkerCommand::new("true")
            .escape_mode(EscapeProof::Cgroup)
            .spawn()
            .is_ok()
    });
    if cgroups {
        ways.push(Way::LayerEscapeProof);
    }
    for &way in &ways {
        measure(way, 50);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    let mut xargs_times = Vec::new();
    for _ in 0..ROUNDS {
        xargs_times.push(xargs(N));
        for (i, &way) in ways.iter().enumerate() {
            times[i].push(measure(way, N));
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
