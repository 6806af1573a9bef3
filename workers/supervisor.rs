//! A supervisor process for signal tests and benchmarks: creates an operation, starts N
//! `worker-fork-tree` workers (each forking K grandchildren) as exec workers, registers a
//! temp file per worker, prints `ready {operation}` and waits.
//!
//! ```text
//! worker-supervisor --ledger DIR --fork-tree PATH --temp-dir DIR [--workers N] [--tree K]
//!                   [--ignore-term] [--grace-ms MS] [--job-control] [--marker X]
//!                   [--signals exit|report|none]
//! ```
//! `--signals` says how it installs the library's signal handler: `exit` (the default)
//! with `CleanupHandler::install`, whose cleanup ends the process with 128 + N on
//! SIGINT/SIGTERM/SIGHUP; `report` with `CleanupHandler::install_reporting`: it prints
//! `reported SIGNAL`, runs the handler's cleanup itself, prints `cleaned up` and exits 0;
//! `none`: it installs nothing, as a library user who never asks.
//! `--job-control` opts in to the library's job control (Ctrl+Z stops it and its workers).

use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use tom_dist_ledger::cleanup::StopSignals;
use tom_dist_ledger::ledger::{Connect, ExecWorker, Ledger, OperationOptions, TrackedCall};
use tom_dist_ledger::process::{RunOptions, WorkerCommand};
use tom_dist_ledger::{CleanupHandler, ParticipantId, SyncOptions};

/// How the supervisor installs the signal handler.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signals {
    Exit,
    Report,
    None,
}

struct Args {
    ledger: String,
    fork_tree: String,
    temp_dir: String,
    workers: usize,
    tree: usize,
    ignore_term: bool,
    job_control: bool,
    grace_ms: u64,
    marker: Option<String>,
    signals: Signals,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        ledger: String::new(),
        fork_tree: String::new(),
        temp_dir: String::new(),
        workers: 3,
        tree: 2,
        ignore_term: false,
        job_control: false,
        grace_ms: 5000,
        marker: None,
        signals: Signals::Exit,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--ignore-term" {
            a.ignore_term = true;
            continue;
        }
        if flag == "--job-control" {
            a.job_control = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("missing value for {flag}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--ledger" => a.ledger = v,
            "--fork-tree" => a.fork_tree = v,
            "--temp-dir" => a.temp_dir = v,
            "--workers" => a.workers = num(&v)? as usize,
            "--tree" => a.tree = num(&v)? as usize,
            "--grace-ms" => a.grace_ms = num(&v)?,
            "--marker" => a.marker = Some(v),
            "--signals" => {
                a.signals = match v.as_str() {
                    "exit" => Signals::Exit,
                    "report" => Signals::Report,
                    "none" => Signals::None,
                    other => return Err(format!("--signals: unknown mode `{other}`")),
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

async fn run(a: Args) -> Result<(), String> {
    let grace = Duration::from_millis(a.grace_ms);
    let handler = CleanupHandler::global();
    handler.set_grace(grace);
    let mut reported: Option<StopSignals> = None;
    match a.signals {
        Signals::Exit => handler.install().map_err(|e| e.to_string())?,
        Signals::Report => {
            reported = Some(handler.install_reporting().map_err(|e| e.to_string())?);
        }
        Signals::None => {}
    }
    if a.job_control {
        CleanupHandler::global()
            .install_job_control()
            .map_err(|e| e.to_string())?;
    }
    let ledger = Ledger::connect(
        Connect::local(&a.ledger)
            .participant(ParticipantId::parse("supervisor").map_err(|e| e.to_string())?),
    )
    .await
    .map_err(|e| e.to_string())?;
    let op = ledger
        .create_operation(OperationOptions::new().description("signal test"))
        .await
        .map_err(|e| e.to_string())?;
    op.set_worker_grace(grace);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut calls = Vec::new();
    for i in 0..a.workers {
        let temp = std::path::Path::new(&a.temp_dir).join(format!("worker-{i}.tmp"));
        std::fs::write(&temp, "scratch").map_err(|e| format!("{}: {e}", temp.display()))?;
        op.register_temp_resource(&temp)
            .await
            .map_err(|e| e.to_string())?;
        let mut args = vec![a.tree.to_string()];
        if a.ignore_term {
            args.push("--ignore-term".into());
        }
        if let Some(m) = &a.marker {
            args.extend(["--marker".into(), m.clone()]);
        }
        let tx = tx.clone();
        let result = std::path::Path::new(&a.temp_dir).join(format!("result-{i}.json"));
        calls.push(op.exec_file_result_worker::<Value>(
            ExecWorker::new(WorkerCommand::new(&a.fork_tree).args(args)).run(
                RunOptions::default().on_stdout(move |line| {
                    if line == "ready" {
                        let _ = tx.send(());
                    }
                }),
            ),
            result,
        ));
    }
    for _ in 0..a.workers {
        rx.recv().await.ok_or("worker ended before ready")?;
    }
    // A worker's output can come before its frame is written: ready means recorded too,
    // so that recovery after a SIGKILL finds every worker group.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let data = op.refresh().await.map_err(|e| e.to_string())?;
        let recorded = data
            .call_frames
            .iter()
            .filter(|f| f.process.is_some())
            .count();
        if recorded >= a.workers {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("only {recorded} of {} workers recorded", a.workers));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {}", op.operation_id());
    let _ = out.flush();
    drop(out);
    let tracked: Vec<&dyn TrackedCall> = calls.iter().map(|c| c as &dyn TrackedCall).collect();
    let Some(mut stops) = reported else {
        op.sync(&tracked, SyncOptions::new()).await;
        handler.settle().await;
        return Ok(());
    };
    tokio::select! {
        _ = op.sync(&tracked, SyncOptions::new()) => Ok(()),
        sig = stops.recv() => {
            let sig = sig.ok_or("the signal listener ended")?;
            say(&format!("reported {sig}"));
            handler.cleanup(sig).await;
            say("cleaned up");
            Ok(())
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let code = match parse() {
        Ok(a) => match run(a).await {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "worker-supervisor: {e}");
                1
            }
        },
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "worker-supervisor: {e}");
            2
        }
    };
    std::process::exit(code);
}
