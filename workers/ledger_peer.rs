//! A ledger participant in its own process, for tests and benchmarks that need a second
//! real process on the same ledger.
//!
//! ```text
//! worker-ledger-peer wait-abort --ledger DIR --op OP --participant ID
//!     join, print `ready`, wait for the abort, print `aborted {unix_nanos}`, leave
//! worker-ledger-peer wait-failed --ledger DIR --op OP --participant ID
//!     join, print `ready`, wait for the failure, print `failed {unix_nanos}`
//! worker-ledger-peer calls --ledger DIR --op OP --participant ID --n N
//!     join, start and end N calls, leave
//! worker-ledger-peer hang --ledger DIR --op OP --participant ID [--temp PATH]
//!                   [--worker PATH [--worker-arg A]...] [--contained]
//!     join, register temp resources, open a call (with `--contained`: fail_on_crash
//!     off), start the worker as an exec worker and wait until it prints `ready`, print
//!     `ready`, then wait; prints `fenced` and exits 3 if fenced out of the operation;
//!     with `--paused`, records itself as paused by job control before `ready` (a test
//!     then stops it with SIGSTOP)
//! worker-ledger-peer fail-and-hang ...
//!     like hang, then fail its call (it becomes the cleanup coordinator) and wait
//! worker-ledger-peer create-hang --ledger DIR --op OP --participant ID [--no-call] ...
//!     like hang, but creates the operation OP as its initiator; with `--no-call` it
//!     opens no call and starts no worker (it only heartbeats)
//!
//! Timing: --hb-ms (heartbeat interval, default 3600000), --stale-ms (stale threshold),
//! --cleanup-wait-ms (how long a coordinator waits for the others).
//! Ledger: --ledger DIR, or --etcd URL[,URL...] with --prefix P (an etcd ledger).
//! Posing as another machine: --host NAME (the host recorded), --skew-ms N (this
//! participant's clock runs N ms ahead; negative: behind).
//! ```
//! `--ledger` may be a ledger server's `http://` URL (with `--token T`).
//! Any `--marker X` argument is ignored (tests find their processes by it).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tom_dist_ledger::clock::{Clock, SystemClock, Timestamp};
use tom_dist_ledger::ledger::{
    CallOptions, Connect, ExecWorker, Ledger, OperationCallback, OperationOptions,
};
use tom_dist_ledger::process::{RunOptions, WorkerCommand};
use tom_dist_ledger::{CallId, OperationId, ParticipantId};

struct Args {
    mode: String,
    ledger: String,
    token: Option<String>,
    op: String,
    participant: String,
    n: usize,
    temps: Vec<String>,
    worker: Option<String>,
    worker_args: Vec<String>,
    contained: bool,
    paused: bool,
    no_call: bool,
    hb_ms: u64,
    etcd: Option<String>,
    prefix: Option<String>,
    host: Option<String>,
    skew_ms: i64,
    stale_ms: Option<u64>,
    cleanup_wait_ms: Option<u64>,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or("missing mode")?;
    let mut out = Args {
        mode,
        ledger: String::new(),
        token: None,
        op: String::new(),
        participant: "peer".into(),
        n: 0,
        temps: Vec::new(),
        worker: None,
        worker_args: Vec::new(),
        contained: false,
        paused: false,
        no_call: false,
        hb_ms: 3_600_000,
        etcd: None,
        prefix: None,
        host: None,
        skew_ms: 0,
        stale_ms: None,
        cleanup_wait_ms: None,
    };
    while let Some(flag) = args.next() {
        if flag == "--contained" {
            out.contained = true;
            continue;
        }
        if flag == "--paused" {
            out.paused = true;
            continue;
        }
        if flag == "--no-call" {
            out.no_call = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("missing value for {flag}"))?;
        match flag.as_str() {
            "--ledger" => out.ledger = value,
            "--etcd" => out.etcd = Some(value),
            "--prefix" => out.prefix = Some(value),
            "--host" => out.host = Some(value),
            "--skew-ms" => out.skew_ms = value.parse().map_err(|e| format!("--skew-ms: {e}"))?,
            "--token" => out.token = Some(value),
            "--op" => out.op = value,
            "--participant" => out.participant = value,
            "--n" => out.n = value.parse().map_err(|e| format!("--n: {e}"))?,
            "--temp" => out.temps.push(value),
            "--worker" => out.worker = Some(value),
            "--worker-arg" => out.worker_args.push(value),
            "--hb-ms" => out.hb_ms = value.parse().map_err(|e| format!("--hb-ms: {e}"))?,
            "--stale-ms" => {
                out.stale_ms = Some(value.parse().map_err(|e| format!("--stale-ms: {e}"))?)
            }
            "--cleanup-wait-ms" => {
                out.cleanup_wait_ms = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--cleanup-wait-ms: {e}"))?,
                )
            }
            "--marker" => {}
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(out)
}

/// The real clock, this many ms ahead (behind when negative): a machine whose clock is
/// off.
#[derive(Debug)]
struct SkewedClock(i64);

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        SystemClock.now() + chrono::Duration::milliseconds(self.0)
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn run(args: Args) -> Result<(), String> {
    let participant = ParticipantId::parse(&args.participant).map_err(|e| e.to_string())?;
    let op_id = OperationId::parse(&args.op).map_err(|e| e.to_string())?;
    let target = match &args.etcd {
        Some(list) => {
            Connect::etcd_from_list(list, args.prefix.as_deref()).map_err(|e| e.to_string())?
        }
        None if args.ledger.starts_with("http://") => {
            // A ledger server's URL instead of a directory: join through the server.
            let remote = Connect::remote(&args.ledger);
            match &args.token {
                Some(token) => remote.token(token),
                None => remote,
            }
        }
        None => Connect::local(&args.ledger),
    };
    let mut connect = target
        .participant(participant)
        .heartbeat_interval(Duration::from_millis(args.hb_ms))
        .heartbeat_jitter(Duration::ZERO);
    if let Some(ms) = args.stale_ms {
        connect = connect.stale_threshold(Duration::from_millis(ms));
    }
    if let Some(ms) = args.cleanup_wait_ms {
        connect = connect.cleanup_wait(Duration::from_millis(ms));
    }
    if let Some(host) = &args.host {
        connect = connect.host(host.clone());
    }
    if args.skew_ms != 0 {
        connect = connect.clock(std::sync::Arc::new(SkewedClock(args.skew_ms)));
    }
    let ledger = Ledger::connect(connect).await.map_err(|e| e.to_string())?;
    // Tests stop this process with SIGSTOP: make sure no write of ours is in flight then
    // (a stopped process holding the ledger lock would hold up everyone). So the first
    // heartbeat has landed before anything else happens.
    let (beat_tx, beat_rx) = tokio::sync::oneshot::channel();
    let beat_tx = std::sync::Mutex::new(Some(beat_tx));
    // Started by another participant's exec worker: say which call (crashes are reported
    // to it).
    let mut options = OperationOptions::new();
    if let Some(call) = std::env::var("TOM_LEDGER_CALL")
        .ok()
        .and_then(|c| CallId::parse(c).ok())
    {
        options = options.spawned_by(call);
    }
    let options = options.callback(OperationCallback::new().on_heartbeat_success(move |_, _| {
        if let Some(tx) = beat_tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(());
        }
    }));
    let op = if args.mode.starts_with("create-") {
        ledger
            .create_operation(options.operation_id(op_id))
            .await
            .map_err(|e| e.to_string())?
    } else {
        ledger
            .join_operation(&op_id, options)
            .await
            .map_err(|e| e.to_string())?
    };
    beat_rx
        .await
        .map_err(|_| "no first heartbeat".to_string())?;
    match args.mode.as_str() {
        "wait-abort" => {
            say("ready");
            op.aborted().await;
            say(&format!("aborted {}", nanos()));
            op.leave(true).await.map_err(|e| e.to_string())?;
        }
        "wait-failed" => {
            say("ready");
            op.failed().await;
            say(&format!("failed {}", nanos()));
        }
        "calls" => {
            for _ in 0..args.n {
                let call = op
                    .start_call::<()>(CallOptions::new())
                    .await
                    .map_err(|e| e.to_string())?;
                call.end(()).await.map_err(|e| e.to_string())?;
            }
            op.leave(false).await.map_err(|e| e.to_string())?;
        }
        "create-hang" if args.no_call => {
            say("ready");
            op.failed().await;
            say("failed");
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        "hang" | "fail-and-hang" | "create-hang" => {
            for t in &args.temps {
                op.register_temp_resource(t)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let call = op
                .start_call::<()>(
                    CallOptions::new()
                        .description("hanging")
                        .fail_on_crash(!args.contained),
                )
                .await
                .map_err(|e| e.to_string())?;
            let _worker = match &args.worker {
                Some(path) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let mut tx = Some(tx);
                    let worker = op.exec_file_result_worker::<serde_json::Value>(
                        ExecWorker::new(WorkerCommand::new(path).args(args.worker_args.clone()))
                            .call(CallOptions::new().fail_on_crash(!args.contained))
                            .run(RunOptions::default().on_stdout(move |line| {
                                if line == "ready"
                                    && let Some(tx) = tx.take()
                                {
                                    let _ = tx.send(());
                                }
                            })),
                        std::env::temp_dir().join(format!("peer-{}.json", std::process::id())),
                    );
                    rx.await
                        .map_err(|_| "worker ended before ready".to_string())?;
                    // Its identity is written to the frame in the background: wait for it.
                    let id = worker.call_id().clone();
                    loop {
                        let data = op.refresh().await.map_err(|e| e.to_string())?;
                        if data.frame(&id).is_some_and(|f| f.process.is_some()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Some(worker)
                }
                None => None,
            };
            if args.paused {
                ledger.set_paused(true).await.map_err(|e| e.to_string())?;
            }
            say("ready");
            if args.mode == "fail-and-hang" {
                call.fail("failing on purpose")
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let info = op.failed().await;
            if info.reason.as_deref().is_some_and(|r| r.contains("fenced")) {
                say("fenced");
                // Stopping its own workers is part of the failure handling; wait for it.
                if let Some(w) = &_worker {
                    w.wait().await;
                }
                std::process::exit(3);
            }
            say("failed");
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        other => return Err(format!("unknown mode {other}")),
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("worker-ledger-peer: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("worker-ledger-peer: {e}");
        std::process::exit(1);
    }
}
