//! Supervisor overhead of `tom-ledger run`, measured as a user runs it: the release binary
//! on a plan file of 1,000 independent `true` workers at `-j 2`, next to `xargs -P2 -n1
//! true` over the same 1,000 items, in pairs that alternate which goes first, wall time,
//! the median of the pairs' ratios next to CPU time (`run` prints `--json` events to
//! /dev/null, so no terminal display counts). Once on the machine as it is ("quiet") and
//! once beside two busy loops (two threads of this process spinning, one per core here).
//!
//! Two parts of a run are also measured on their own in the quiet phase: the process
//! layer (1,000 `true` workers started with `WorkerCommand`, parent-death signal included,
//! waited for and their groups checked, two at a time, on one thread as `run` does) and
//! the ledger, on the same disk (1,000 calls started and ended through the library: a
//! frame written and removed each, with their log lines).
//!
//! Run: `cargo bench --bench cli_run` (`CLI_BENCH_PAIRS`, default 7, pairs per phase).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{CallOptions, Connect, Ledger, OperationOptions};
use tom_dist_ledger::process::{StdioMode, WorkerCommand};

const BIN: &str = env!("CARGO_BIN_EXE_tom-ledger");
const N: usize = 1000;
const JOBS: usize = 2;
/// Targets of SPEC §13: quiet, and beside two busy loops.
const TARGET_QUIET: f64 = 1.1;
const TARGET_BUSY: f64 = 1.3;

fn write_plan(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut text = String::with_capacity(n * 40);
    for i in 0..n {
        text.push_str(&format!(
            "[[worker]]\nname = \"w{i}\"\ncmd = [\"true\"]\n\n"
        ));
    }
    let path = dir.join(format!("plan-{n}.toml"));
    std::fs::write(&path, text).expect("write plan");
    path
}

/// The command `run` is timed with (for the record).
fn run_args(ledger: &Path, plan: &Path) -> Vec<String> {
    vec![
        "--ledger".into(),
        ledger.display().to_string(),
        "--json".into(),
        "run".into(),
        "-j".into(),
        JOBS.to_string(),
        "--plan".into(),
        plan.display().to_string(),
    ]
}

/// Wall time and CPU time (user + system, the command and every process it waited for).
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

/// CPU used so far by the children of this process that were waited for.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn measure(f: impl FnOnce()) -> Cost {
    let cpu = children_cpu();
    let start = Instant::now();
    f();
    Cost {
        wall: start.elapsed(),
        cpu: children_cpu().saturating_sub(cpu),
    }
}

fn cli(dir: &Path, plan: &Path, round: &str) -> Cost {
    let ledger = dir.join(format!("ledger-{round}"));
    let cost = measure(|| cli_once(&ledger, plan));
    let _ = std::fs::remove_dir_all(&ledger);
    cost
}

fn cli_once(ledger: &Path, plan: &Path) {
    let status = Command::new(BIN)
        .args(run_args(ledger, plan))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("run tom-ledger");
    assert!(status.success(), "tom-ledger run failed: {status}");
}

fn xargs(n: usize) -> Cost {
    measure(|| xargs_once(n))
}

fn xargs_once(n: usize) {
    let input: String = (1..=n).map(|i| format!("{i}\n")).collect();
    let mut child = Command::new("xargs")
        .args([format!("-P{JOBS}").as_str(), "-n1", "true"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run xargs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("feed xargs");
    }
    let status = child.wait().expect("wait for xargs");
    assert!(status.success(), "xargs failed: {status}");
}

/// 1,000 calls started and ended through the library on a ledger in `dir`.
fn ledger_only(dir: &Path, n: usize) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ledger = Ledger::connect(
            Connect::local(dir.join("ledger-only"))
                .participant(ParticipantId::parse("bench").expect("valid id")),
        )
        .await
        .expect("connect");
        let op = ledger
            .create_operation(OperationOptions::new())
            .await
            .expect("create");
        let start = Instant::now();
        for i in 0..n {
            let call = op
                .start_call::<()>(
                    CallOptions::new()
                        .description(format!("w{i}"))
                        .fail_on_crash(false),
                )
                .await
                .expect("start call");
            call.end(()).await.expect("end call");
        }
        let elapsed = start.elapsed();
        op.complete().await.expect("complete");
        ledger.dispose().await;
        elapsed
    })
}

/// 1,000 `true` workers through the process layer alone, `JOBS` at a time, on one runtime
/// thread.
fn process_layer_only(n: usize) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let next = std::rc::Rc::new(std::cell::Cell::new(0));
        let start = Instant::now();
        let slot = || {
            let next = next.clone();
            async move {
                while next.get() < n {
                    next.set(next.get() + 1);
                    let mut worker = WorkerCommand::new("true")
                        .stdout(StdioMode::Null)
                        .stderr(StdioMode::Null)
                        .spawn()
                        .expect("spawn true");
                    let status = worker.wait().await.expect("wait");
                    assert!(status.success());
                    worker.stop(Duration::from_secs(5)).await;
                }
            }
        };
        let slots: Vec<_> = (0..JOBS).map(|_| slot()).collect();
        futures_join_all(slots).await;
        start.elapsed()
    })
}

/// Runs the futures to completion together on the current task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us_each(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6 / N as f64
}

/// Two threads spinning until dropped.
struct BusyLoops {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyLoops {
    fn start(n: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `pairs` pairs of xargs and `run`, alternating which goes first.
fn pairs(dir: &Path, plan: &Path, pairs: usize, phase: &str) -> (Vec<Cost>, Vec<Cost>) {
    let (mut x, mut t) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let round = format!("{phase}-{i}");
        if i % 2 == 0 {
            x.push(xargs(N));
            t.push(cli(dir, plan, &round));
        } else {
            t.push(cli(dir, plan, &round));
            x.push(xargs(N));
        }
    }
    (x, t)
}

/// The table of one phase; returns the median ratio of the pairs.
fn report(phase: &str, x: &[Cost], t: &[Cost], target: f64) -> f64 {
    let ratios: Vec<f64> = x
        .iter()
        .zip(t)
        .map(|(x, t)| t.wall.as_secs_f64() / x.wall.as_secs_f64())
        .collect();
    let cpu_ratios: Vec<f64> = x
        .iter()
        .zip(t)
        .map(|(x, t)| t.cpu.as_secs_f64() / x.cpu.as_secs_f64())
        .collect();
    let ratio = median(ratios.clone());
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let wall = |v: &[Cost]| median(v.iter().map(|c| c.wall).collect());
    let cpu = |v: &[Cost]| median(v.iter().map(|c| c.cpu).collect());
    println!("{phase}: {} pairs, medians", ratios.len());
    println!();
    println!("| way | wall | per worker | CPU (with workers) | CPU per worker |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        (format!("`xargs -P{JOBS} -n1 true`"), x),
        (format!("`tom-ledger run -j {JOBS}`"), t),
    ] {
        println!(
            "| {name} | {:.0} ms | {:.0} µs | {:.0} ms | {:.0} µs |",
            ms(wall(v)),
            us_each(wall(v)),
            ms(cpu(v)),
            us_each(cpu(v))
        );
    }
    println!();
    println!(
        "{phase}: run / xargs wall, median of the pairs: **{ratio:.2}×** (pairs {lo:.2}–{hi:.2}×); CPU {:.2}×; target at most {target:.1}×: {}",
        median(cpu_ratios),
        if ratio <= target { "met" } else { "NOT met" }
    );
    println!();
    ratio
}

fn main() {
    let n_pairs: usize = std::env::var("CLI_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = write_plan(dir.path(), N);
    // Warm up caches (binaries, page cache, the ledger's code paths).
    let warm = write_plan(dir.path(), 50);
    xargs(50);
    cli(dir.path(), &warm, "warm");
    println!("{N} `true` workers at -j {JOBS}");
    println!();
    println!(
        "command: tom-ledger {} > /dev/null",
        run_args(Path::new("L"), Path::new("PLAN")).join(" ")
    );
    println!();

    let (x, t) = pairs(dir.path(), &plan, n_pairs, "quiet");
    let (mut l, mut p) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        p.push(process_layer_only(N));
        l.push(ledger_only(dir.path(), N));
        let _ = std::fs::remove_dir_all(dir.path().join("ledger-only"));
    }
    let quiet = report("quiet", &x, &t, TARGET_QUIET);
    let xw = median(x.iter().map(|c| c.wall).collect());
    let tw = median(t.iter().map(|c| c.wall).collect());
    let (l, p) = (median(l), median(p));
    println!(
        "process layer alone (spawn with parent-death signal, wait, group check; -j {JOBS} on one thread): {:.0} ms = {:.2}× xargs",
        ms(p),
        p.as_secs_f64() / xw.as_secs_f64()
    );
    println!(
        "ledger alone (1,000 calls started and ended, one process): {:.0} ms = {:.0} µs per worker = {:.0}% of the run's wall time",
        ms(l),
        us_each(l),
        100.0 * l.as_secs_f64() / tw.as_secs_f64()
    );
    println!();

    let busy = {
        let _loops = BusyLoops::start(2);
        let (x, t) = pairs(dir.path(), &plan, n_pairs, "busy");
        report("beside two busy loops", &x, &t, TARGET_BUSY)
    };
    println!("summary: quiet {quiet:.2}×, beside two busy loops {busy:.2}×");
}
