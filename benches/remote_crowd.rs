//! A ledger server with many connected participants (SPEC §13: under 100 MiB with 1,000):
//! one real `tom-ledger serve` on loopback over a file ledger in a temp directory, and
//! `worker-ledger-crowd` processes, each joining one operation as many participants with
//! a client store, heartbeats and an event stream of their own. Once all have joined,
//! the server's RSS (`VmRSS`, `VmHWM` from /proc) and its CPU time while they idle
//! (heartbeats and event streams only) are read.
//!
//! `cargo bench --features test-workers --bench remote_crowd`; settings:
//! `CROWD_OPERATIONS` (default 10), `CROWD_PER_OPERATION` (default 100),
//! `CROWD_HB_MS` (heartbeat interval, default 5000), `CROWD_IDLE_S` (how long the idle
//! CPU time is measured, default 20).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{Connect, Ledger, OperationOptions};

#[path = "common/serve.rs"]
mod serve;

use serve::{Server, env_or};

const CROWD: &str = env!("CARGO_BIN_EXE_worker-ledger-crowd");

impl Server {
    /// A field of /proc/PID/status in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("server status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("field")
    }

    /// User + system CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("server stat");
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
    }
}

#[tokio::main]
async fn main() {
    let operations: usize = env_or("CROWD_OPERATIONS", 10);
    let per_operation: usize = env_or("CROWD_PER_OPERATION", 100);
    let hb_ms: u64 = env_or("CROWD_HB_MS", 5000);
    let idle_s: u64 = env_or("CROWD_IDLE_S", 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let before_kib = server.status_kib("VmRSS:");
    let ledger = Ledger::connect(
        Connect::remote(&server.url)
            .token(&server.token)
            .participant(ParticipantId::parse("bench").expect("id")),
    )
    .await
    .expect("connect");
    let mut ops = Vec::new();
    for _ in 0..operations {
        ops.push(
            ledger
                .create_operation(OperationOptions::new())
                .await
                .expect("create"),
        );
    }
    let joining = Instant::now();
    let mut crowds = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let mut child = tokio::process::Command::new(CROWD)
            .args(["--ledger", &server.url, "--token", &server.token])
            .args(["--op", op.operation_id().as_str()])
            .args(["--participants", &per_operation.to_string()])
            .args(["--prefix", &format!("crowd{i}")])
            .args(["--hb-ms", &hb_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("crowd");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        crowds.push((child, lines));
    }
    for (_, lines) in &mut crowds {
        let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .expect("joined within 10 minutes")
            .expect("read")
            .expect("a ready line");
        assert_eq!(line, format!("ready {per_operation}"));
    }
    let joined_in = joining.elapsed();
    let total = operations * per_operation;
    let after_join_kib = server.status_kib("VmRSS:");
    let ticks_before = server.cpu_ticks();
    let idle_started = Instant::now();
    let mut most_kib = after_join_kib;
    while idle_started.elapsed() < Duration::from_secs(idle_s) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        most_kib = most_kib.max(server.status_kib("VmRSS:"));
    }
    let ticks = server.cpu_ticks().saturating_sub(ticks_before);
    let tick_hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let idle_cpu = ticks as f64 / tick_hz / idle_started.elapsed().as_secs_f64();
    let peak_kib = server.status_kib("VmHWM:");
    println!(
        "{total} participants ({operations} operations x {per_operation}, each its own client and event stream, heartbeat every {hb_ms} ms) joined in {:.1} s",
        joined_in.as_secs_f64()
    );
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB once all joined, at most {:.1} MiB over {idle_s} s idle; peak (VmHWM) {:.1} MiB (target under 100 MiB)",
        before_kib as f64 / 1024.0,
        after_join_kib as f64 / 1024.0,
        most_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
    );
    println!(
        "server CPU while they idle: {:.1}% of one core",
        idle_cpu * 100.0
    );
    for (child, _) in &mut crowds {
        drop(child.stdin.take());
    }
    for (mut child, _) in crowds {
        let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    }
    for op in ops {
        let _ = op.complete().await;
    }
    ledger.dispose().await;
}
