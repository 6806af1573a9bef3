//! Many participants of one operation in one process, each with its own connection to a
//! ledger server (its own client store, heartbeats and event stream), for measuring a
//! server with many connected participants.
//!
//! ```text
//! worker-ledger-crowd --ledger URL --token T --op OP --participants N --prefix P
//!                     [--hb-ms MS] [--stale-ms MS]
//!     join OP as P-0 .. P-{N-1}, print `ready N`, hold them until stdin closes, then
//!     leave and exit
//! ```

use std::io::Write;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tom_dist_ledger::ledger::{Connect, Ledger, OperationOptions};
use tom_dist_ledger::{OperationId, ParticipantId};

struct Args {
    ledger: String,
    token: Option<String>,
    op: String,
    participants: usize,
    prefix: String,
    hb_ms: u64,
    stale_ms: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        ledger: String::new(),
        token: None,
        op: String::new(),
        participants: 0,
        prefix: "crowd".into(),
        hb_ms: 5_000,
        stale_ms: 30_000,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("missing value for {flag}"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} `{v}`: {e}"));
        match flag.as_str() {
            "--ledger" => out.ledger = value,
            "--token" => out.token = Some(value),
            "--op" => out.op = value,
            "--participants" => out.participants = number(&value)? as usize,
            "--prefix" => out.prefix = value,
            "--hb-ms" => out.hb_ms = number(&value)?,
            "--stale-ms" => out.stale_ms = number(&value)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !out.ledger.starts_with("http://") {
        return Err(format!("--ledger `{}`: expected a server url", out.ledger));
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), String> {
    let op_id = OperationId::parse(&args.op).map_err(|e| e.to_string())?;
    let mut held = Vec::with_capacity(args.participants);
    for i in 0..args.participants {
        let id = ParticipantId::parse(format!("{}-{i}", args.prefix)).map_err(|e| e.to_string())?;
        let mut connect = Connect::remote(&args.ledger)
            .participant(id)
            .heartbeat_interval(Duration::from_millis(args.hb_ms))
            .stale_threshold(Duration::from_millis(args.stale_ms));
        if let Some(token) = &args.token {
            connect = connect.token(token);
        }
        let ledger = Ledger::connect(connect).await.map_err(|e| e.to_string())?;
        let op = ledger
            .join_operation(&op_id, OperationOptions::new())
            .await
            .map_err(|e| format!("participant {i}: {e}"))?;
        held.push((ledger, op));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {}", held.len());
    let _ = out.flush();
    drop(out);
    // Hold until whoever started this closes stdin.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    for (ledger, op) in held {
        let _ = op.leave(true).await;
        ledger.dispose().await;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("worker-ledger-crowd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("worker-ledger-crowd: {e}");
        std::process::exit(1);
    }
}
