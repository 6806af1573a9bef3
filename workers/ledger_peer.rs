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
//!     join, register temp resources, open a call, print `ready`, wait to be killed
//! ```
//! Any `--marker X` argument is ignored (tests find their processes by it).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tom_dist_ledger::ledger::{CallOptions, Connect, Ledger, OperationOptions};
use tom_dist_ledger::{OperationId, ParticipantId};

struct Args {
    mode: String,
    ledger: String,
    op: String,
    participant: String,
    n: usize,
    temps: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or("missing mode")?;
    let mut out = Args {
        mode,
        ledger: String::new(),
        op: String::new(),
        participant: "peer".into(),
        n: 0,
        temps: Vec::new(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("missing value for {flag}"))?;
        match flag.as_str() {
            "--ledger" => out.ledger = value,
            "--op" => out.op = value,
            "--participant" => out.participant = value,
            "--n" => out.n = value.parse().map_err(|e| format!("--n: {e}"))?,
            "--temp" => out.temps.push(value),
            "--marker" => {}
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(out)
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
    let ledger = Ledger::connect(
        Connect::local(&args.ledger)
            .participant(participant)
            .heartbeat_interval(Duration::from_secs(3600)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let op = ledger
        .join_operation(&op_id, OperationOptions::new())
        .await
        .map_err(|e| e.to_string())?;
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
        "hang" => {
            for t in &args.temps {
                op.register_temp_resource(t).await.map_err(|e| e.to_string())?;
            }
            let call = op
                .start_call::<()>(CallOptions::new().description("hanging"))
                .await
                .map_err(|e| e.to_string())?;
            say("ready");
            tokio::time::sleep(Duration::from_secs(120)).await;
            call.end(()).await.map_err(|e| e.to_string())?;
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
