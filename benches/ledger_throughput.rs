//! Ledger throughput: call start+end through `FileStore` under 1, 2 and 8 contending
//! processes, against the bare lock/read/write/rename cycle on the same disk, in one run.
//!
//! `cargo bench --bench ledger_throughput`
//!
//! Every process is `worker-ledger-contender`: in `bench-bare` mode it runs the bare cycle
//! with raw std calls on a copy of the operation file; in `bench-ledger` mode it makes
//! ledger calls (each a `modify` adding a frame plus a `CALL_STARTED` line, then a `modify`
//! removing it plus a `CALL_ENDED` line: two transactions). The ratio is ledger
//! transactions/s to bare cycles/s. Two more runs put it in context: the bare cycle
//! swapping its file in with `RENAME_EXCHANGE` as the ledger does (the ledger's own
//! overhead over the same file-system work), and the ledger without a trail. The kinds
//! take turns within each round so drift of the machine hits all alike; ratios are the
//! medians of the rounds' ratios.
//!
//! Settings (environment): `LEDGER_BENCH_MILLIS` per run (default 1000),
//! `LEDGER_BENCH_ROUNDS` (default 5), `LEDGER_BENCH_PROCESSES` (default `1,2,8`),
//! `LEDGER_BENCH_DIRS`: `target`, `tmp` or both (default `target,tmp`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tom_dist_ledger::ids::{OperationId, ParticipantId};
use tom_dist_ledger::model::{LedgerData, Participant, ParticipantState, time};
use tom_dist_ledger::store::{FileStore, FileStoreOptions, Store};

const CONTENDER: &str = env!("CARGO_BIN_EXE_worker-ledger-contender");
/// Participants registered in the benchmark's operation, as the ledger would record them.
const PARTICIPANTS: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Lock, read, write a temp file, rename it over.
    Bare,
    /// The same, swapping the temp file in with `RENAME_EXCHANGE` as the ledger does.
    BareSwap,
    Ledger,
    /// The ledger with `trail_keep = 0`, to show what the trail costs.
    LedgerWithoutTrail,
}

const KINDS: [Kind; 4] = [
    Kind::Bare,
    Kind::BareSwap,
    Kind::Ledger,
    Kind::LedgerWithoutTrail,
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let millis: u64 = env_or("LEDGER_BENCH_MILLIS", 1000);
    let rounds: usize = env_or("LEDGER_BENCH_ROUNDS", 5);
    let processes: Vec<usize> = env_or("LEDGER_BENCH_PROCESSES", "1,2,8".to_string())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let dirs = env_or("LEDGER_BENCH_DIRS", "target,tmp".to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    println!(
        "ledger throughput: {millis} ms per run, {rounds} rounds of bare and ledger runs in turn"
    );
    for place in dirs.split(',') {
        let (parent, label) = match place.trim() {
            "target" => (
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
                "next to the target dir",
            ),
            "tmp" => (std::env::temp_dir(), "/tmp"),
            other => panic!("LEDGER_BENCH_DIRS: unknown place `{other}`"),
        };
        println!("\n### {label} (`{}`)\n", parent.display());
        println!(
            "| processes | bare cycles/s | transactions/s | pairs/s | **ratio** (min–max) \
             | bare swap cycles/s | ratio to swap | tx/s without trail |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &processes {
            // Per kind, the rate of each round; the kinds take turns within a round.
            let mut rates: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
            for _ in 0..rounds {
                for (i, &kind) in KINDS.iter().enumerate() {
                    rates[i].push(measure(&rt, &parent, kind, n, millis));
                }
            }
            let ratio = |a: usize, b: usize| -> Vec<f64> {
                rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect()
            };
            let (to_bare, to_swap) = (ratio(2, 0), ratio(2, 1));
            let tx = median(&rates[2]);
            println!(
                "| {n} | {:.0} | {tx:.0} | {:.0} | **{:.2}** ({:.2}–{:.2}) | {:.0} | {:.2} | {:.0} |",
                median(&rates[0]),
                tx / 2.0,
                median(&to_bare),
                min(&to_bare),
                max(&to_bare),
                median(&rates[1]),
                median(&to_swap),
                median(&rates[3]),
            );
        }
    }
}

/// One run in a fresh directory under `parent`: operations per second of `n` processes.
fn measure(rt: &tokio::runtime::Runtime, parent: &Path, kind: Kind, n: usize, millis: u64) -> f64 {
    let dir = tempfile::tempdir_in(parent).expect("bench dir");
    let (op, bare) = rt.block_on(prepare(dir.path()));
    run(kind, dir.path(), &op, &bare, n, millis)
}

/// A ledger directory with one operation (with registered participants, as in real use)
/// and a copy of its file for the bare cycle, with its own lock file.
async fn prepare(dir: &Path) -> (OperationId, String) {
    let store = FileStore::open(dir, FileStoreOptions::default()).expect("open ledger");
    let op = OperationId::parse("bench_op").unwrap();
    let now = time::now();
    let mut data = LedgerData::new(op.clone(), ParticipantId::parse("cli").unwrap(), now);
    for n in 0..PARTICIPANTS {
        let participant = Participant {
            pid: 10_000 + n as i32,
            start_ticks: Some(123_456),
            host: "bench-host".into(),
            boot_id: Some("0b3c8f0e-5b0c-4d5e-9a55-6f7e8d9c0b1a".into()),
            pid_namespace: Some(4_026_531_836),
            uid: Some(1000),
            epoch: n as u64 + 1,
            last_heartbeat: now,
            joined_at: now,
            state: ParticipantState::Active,
            spawned_by: None,
            paused_at: None,
        };
        data.participants.insert(
            ParticipantId::parse(format!("peer-{n}")).unwrap(),
            participant,
        );
    }
    store.create(&data).await.expect("create");
    let bare = "bare.operation.json".to_string();
    std::fs::copy(store.operation_path(&op), dir.join(&bare)).expect("copy");
    std::fs::write(dir.join(format!("{bare}.lock")), b"").expect("lock file");
    (op, bare)
}

/// Run `n` processes of `kind` for `millis`; operations per second, all processes together.
fn run(kind: Kind, dir: &Path, op: &OperationId, bare: &str, n: usize, millis: u64) -> f64 {
    let dir_arg = dir.to_str().expect("utf-8 path");
    let ms = millis.to_string();
    let mut children: Vec<Child> = (0..n)
        .map(|i| {
            let name = format!("worker-{i}");
            let args: Vec<&str> = match kind {
                Kind::Bare => vec!["bench-bare", dir_arg, bare, &ms],
                Kind::BareSwap => vec!["bench-bare", "--swap", dir_arg, bare, &ms],
                _ => vec!["bench-ledger", dir_arg, op.as_str(), &name, &ms],
            };
            let trail_keep = if kind == Kind::LedgerWithoutTrail {
                "0"
            } else {
                "200"
            };
            Command::new(CONTENDER)
                .args(&args)
                .env("LEDGER_TRAIL_KEEP", trail_keep)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start contender")
        })
        .collect();
    for child in &mut children {
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
        stdin.flush().expect("go");
    }
    let mut rate = 0.0;
    for child in children {
        let out = child.wait_with_output().expect("contender output");
        assert!(out.status.success(), "contender failed: {}", out.status);
        let report: Value = serde_json::from_slice(&out.stdout).expect("contender report");
        let count = match kind {
            Kind::Bare | Kind::BareSwap => &report["cycles"],
            _ => &report["transactions"],
        };
        rate += count.as_f64().unwrap() / report["secs"].as_f64().unwrap();
    }
    rate
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}
