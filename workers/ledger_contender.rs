//! `worker-ledger-contender`: one process contending for an operation of a file ledger,
//! used by the contention test and the throughput benchmark.
//!
//! Every mode waits for a line on stdin before it starts, so that a parent can start all
//! its processes first and then let them go at once; `read` runs until stdin closes. Each
//! mode prints one JSON line with what it did.
//!
//! - `calls DIR OP PARTICIPANT N`: join the operation and make N calls, each
//!   `Operation::start_call` then `Call::end` (one write and one log line each).
//! - `read DIR OP`: parse the operation file over and over; report what was seen.
//! - `bench-ledger DIR OP PARTICIPANT MILLIS`: ledger calls for a while.
//! - `bench-bare DIR FILE MILLIS [--swap]`: the bare cycle (lock, read, write temp, rename
//!   over or, with `--swap`, exchange and remove) for a while.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;
use tom_dist_ledger::ids::{OperationId, ParticipantId};
use tom_dist_ledger::ledger::{CallOptions, Connect, Ledger, Operation, OperationOptions};
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::{FileStore, FileStoreOptions};

#[derive(Parser)]
#[command(about = "Contend for an operation of a file ledger")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Start and end N calls.
    Calls {
        dir: PathBuf,
        op: OperationId,
        participant: ParticipantId,
        calls: u64,
    },
    /// Parse the operation file until stdin closes.
    Read { dir: PathBuf, op: OperationId },
    /// Start and end calls for MILLIS milliseconds.
    BenchLedger {
        dir: PathBuf,
        op: OperationId,
        participant: ParticipantId,
        millis: u64,
    },
    /// Run the bare lock/read/write/rename cycle on FILE for MILLIS milliseconds.
    BenchBare {
        dir: PathBuf,
        file: String,
        millis: u64,
        /// Swap the new file in with `RENAME_EXCHANGE` instead of renaming it over, as the
        /// ledger does.
        #[arg(long)]
        swap: bool,
    },
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("worker-ledger-contender: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> BoxResult<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = match args.mode {
        Mode::Calls {
            dir,
            op,
            participant,
            calls,
        } => {
            let caller = runtime.block_on(Caller::open(&dir, op, participant))?;
            wait_for_go()?;
            let start = Instant::now();
            runtime.block_on(async {
                for _ in 0..calls {
                    caller.call().await?;
                }
                caller.leave().await
            })?;
            json!({ "calls": calls, "secs": start.elapsed().as_secs_f64() })
        }
        Mode::Read { dir, op } => read_until_stdin_closes(&FileStore::open(dir, options())?, &op)?,
        Mode::BenchLedger {
            dir,
            op,
            participant,
            millis,
        } => {
            let caller = runtime.block_on(Caller::open(&dir, op, participant))?;
            wait_for_go()?;
            let (calls, secs) = for_a_while(millis, || runtime.block_on(caller.call()))?;
            runtime.block_on(caller.leave())?;
            json!({ "transactions": 2 * calls, "secs": secs })
        }
        Mode::BenchBare {
            dir,
            file,
            millis,
            swap,
        } => {
            let bare = BareCycle::new(&dir, &file);
            wait_for_go()?;
            let (cycles, secs) = for_a_while(millis, || bare.cycle(swap))?;
            json!({ "cycles": cycles, "secs": secs })
        }
    };
    println!("{report}");
    Ok(())
}

/// Store settings; `LEDGER_TRAIL_KEEP` lets the benchmark price the trail.
fn options() -> FileStoreOptions {
    let mut options = FileStoreOptions::default();
    if let Some(keep) = std::env::var("LEDGER_TRAIL_KEEP")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.trail_keep = keep;
    }
    options
}

fn wait_for_go() -> BoxResult<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

/// Repeat `step` for `millis`; the number of steps and the seconds they took.
fn for_a_while(millis: u64, mut step: impl FnMut() -> BoxResult<()>) -> BoxResult<(u64, f64)> {
    let start = Instant::now();
    let until = start + Duration::from_millis(millis);
    let mut n = 0;
    while Instant::now() < until {
        step()?;
        n += 1;
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

/// A participant making ledger calls through the library: it joins the operation, and
/// every call is `Operation::start_call` then `Call::end` (one write and one log line
/// each).
struct Caller {
    op: Operation,
}

impl Caller {
    async fn open(dir: &Path, op: OperationId, me: ParticipantId) -> BoxResult<Self> {
        let connect = Connect::local(dir)
            .participant(me)
            .heartbeat_interval(Duration::from_secs(3600));
        let connect = match std::env::var("LEDGER_TRAIL_KEEP")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(keep) => connect.trail_keep(keep),
            None => connect,
        };
        let ledger = Ledger::connect(connect).await?;
        let op = ledger.join_operation(&op, OperationOptions::new()).await?;
        Ok(Self { op })
    }

    /// One call: start it, end it.
    async fn call(&self) -> BoxResult<()> {
        let call = self
            .op
            .start_call::<()>(CallOptions::new().description("contender call"))
            .await?;
        call.end(()).await?;
        Ok(())
    }

    async fn leave(&self) -> BoxResult<()> {
        Ok(self.op.leave(false).await?)
    }
}

/// Parse the operation file until stdin closes: how many snapshots, how many were not a
/// valid operation, and whether `seq` ever went backwards.
fn read_until_stdin_closes(store: &FileStore, op: &OperationId) -> BoxResult<serde_json::Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        flag.store(true, Ordering::Relaxed);
    });
    let path = store.operation_path(op);
    let (mut snapshots, mut invalid, mut backwards, mut distinct) = (0u64, 0u64, 0u64, 0u64);
    let mut last_seq = 0;
    let mut first_invalid = None;
    while !stop.load(Ordering::Relaxed) {
        let bytes = fs::read(&path)?;
        snapshots += 1;
        match LedgerData::from_json(&bytes) {
            Ok(data) => {
                backwards += u64::from(data.seq < last_seq);
                distinct += u64::from(data.seq != last_seq);
                last_seq = data.seq;
            }
            Err(e) => {
                invalid += 1;
                first_invalid.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(json!({
        "snapshots": snapshots,
        "invalid": invalid,
        "first_invalid": first_invalid,
        "seq_backwards": backwards,
        "seq_changes": distinct,
        "last_seq": last_seq,
    }))
}

/// The bare cycle a ledger write cannot do without: lock the lock file, read the file,
/// write a temp file, rename it over. Raw std calls, nothing parsed.
struct BareCycle {
    file: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

impl BareCycle {
    fn new(dir: &Path, file: &str) -> Self {
        Self {
            file: dir.join(file),
            lock: dir.join(format!("{file}.lock")),
            tmp: dir.join(format!(".{file}.tmp")),
        }
    }

    fn cycle(&self, swap: bool) -> BoxResult<()> {
        let lock = OpenOptions::new().read(true).write(true).open(&self.lock)?;
        lock.lock()?;
        let bytes = fs::read(&self.file)?;
        File::create(&self.tmp)?.write_all(&bytes)?;
        if swap {
            use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
            renameat2(
                AT_FDCWD,
                &self.tmp,
                AT_FDCWD,
                &self.file,
                RenameFlags::RENAME_EXCHANGE,
            )?;
            fs::remove_file(&self.tmp)?;
        } else {
            fs::rename(&self.tmp, &self.file)?;
        }
        drop(lock);
        Ok(())
    }
}
