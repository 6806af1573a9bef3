//! Stop latency: from the stop request until every process of the group is gone, for a
//! worker that honours SIGTERM (target: well under 300 ms), one that ignores it (target:
//! grace + under 300 ms), and a registry-wide stop of many groups at once (Ctrl+C).
//!
//! Run: `cargo bench --bench process_stop`

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::process::{Signal, StdioMode, StopReason, Worker, WorkerCommand, registry};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const IGNORE: &str = env!("CARGO_BIN_EXE_worker-ignore-term");
const TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const ROUNDS: usize = 20;
const GRACE: Duration = Duration::from_secs(1);

async fn ready(program: &str, args: &[&str]) -> Worker {
    let mut w = WorkerCommand::new(program)
        .args(args)
        .stdout(StdioMode::Piped)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(w.take_stdout().expect("stdout")).lines();
    while let Some(line) = lines.next_line().await.expect("read") {
        if line == "ready" {
            break;
        }
    }
    w
}

fn stats(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| {label} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1]),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("{ROUNDS} rounds each; grace {GRACE:?} for the SIGTERM-ignoring cases");
        println!();
        println!("| case | min | median | max |");
        println!("|---|---|---|---|");

        let mut v = Vec::new();
        for _ in 0..ROUNDS {
            let mut w = ready(HANG, &[]).await;
            v.push(w.stop(GRACE).await.elapsed);
        }
        stats("worker honours SIGTERM", v);

        let mut v = Vec::new();
        for _ in 0..ROUNDS {
            let mut w = ready(TREE, &["3"]).await;
            v.push(w.stop(GRACE).await.elapsed);
        }
        stats("tree of 4 honours SIGTERM", v);

        let mut v = Vec::new();
        for _ in 0..ROUNDS / 4 {
            let mut w = ready(IGNORE, &[]).await;
            v.push(w.stop(GRACE).await.elapsed - GRACE);
        }
        stats("worker ignores SIGTERM (time beyond the grace)", v);

        let mut v = Vec::new();
        for _ in 0..ROUNDS / 4 {
            let mut w = ready(TREE, &["3", "--ignore-term"]).await;
            v.push(w.stop(GRACE).await.elapsed - GRACE);
        }
        stats("tree of 4 ignores SIGTERM (time beyond the grace)", v);

        let mut v = Vec::new();
        for _ in 0..ROUNDS / 2 {
            let mut ws = Vec::new();
            for _ in 0..10 {
                ws.push(ready(TREE, &["2"]).await);
            }
            let outcome = registry()
                .stop_all(Some(GRACE), StopReason::Shutdown(Signal::SIGINT))
                .await;
            assert_eq!(outcome.groups, 10);
            v.push(outcome.elapsed);
            for w in &mut ws {
                w.wait().await.expect("reap");
            }
        }
        stats("registry stop_all, 10 trees of 3 honouring SIGTERM", v);

        let mut v = Vec::new();
        for _ in 0..ROUNDS / 4 {
            let mut ws = Vec::new();
            for _ in 0..5 {
                ws.push(ready(HANG, &[]).await);
                ws.push(ready(IGNORE, &[]).await);
            }
            let outcome = registry()
                .stop_all(Some(GRACE), StopReason::Shutdown(Signal::SIGINT))
                .await;
            v.push(outcome.elapsed - GRACE);
            for w in &mut ws {
                w.wait().await.expect("reap");
            }
        }
        stats(
            "registry stop_all, 10 workers, 5 ignore SIGTERM (beyond the grace)",
            v,
        );
    });
}
