//! A ledger participant in its own process (`worker-ledger-peer`), driven by tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tom_dist_ledger::OperationId;

pub const PEER: &str = env!("CARGO_BIN_EXE_worker-ledger-peer");

pub struct Peer {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// Start `worker-ledger-peer MODE` on the operation with extra arguments.
    pub fn start(
        mode: &str,
        dir: &Path,
        op: &OperationId,
        participant: &str,
        extra: &[&str],
    ) -> Peer {
        Self::start_on(
            mode,
            &["--ledger", &dir.to_string_lossy()],
            op,
            participant,
            extra,
        )
    }

    /// Start `worker-ledger-peer MODE` on the ledger named by `ledger` (`--ledger DIR`,
    /// `--etcd LIST --prefix P`).
    pub fn start_on(
        mode: &str,
        ledger: &[&str],
        op: &OperationId,
        participant: &str,
        extra: &[&str],
    ) -> Peer {
        let mut child = Command::new(PEER)
            .arg(mode)
            .args(ledger)
            .args(["--op", op.as_str()])
            .args(["--participant", participant])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start peer");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Peer { child, lines }
    }

    /// The next line the peer prints (bounded wait).
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("peer answered in time")
            .expect("read peer")
            .expect("peer line")
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal peer");
    }

    /// SIGSTOP the peer at a moment it holds no ledger lock (a peer stopped inside a
    /// write would hold up every other participant's writes, crash declarations
    /// included): stopped, checked in `/proc/locks`, let go and tried again if it held one.
    pub async fn stop_outside_lock(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.signal(nix::sys::signal::Signal::SIGSTOP);
            while proc_state(self.pid()) != Some('T') {
                assert!(std::time::Instant::now() < deadline, "peer never stopped");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if !holds_lock(self.pid()) {
                return;
            }
            self.signal(nix::sys::signal::Signal::SIGCONT);
            assert!(
                std::time::Instant::now() < deadline,
                "peer kept holding a lock"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("peer exits in time")
            .expect("wait peer")
    }
}

/// The state letter of `/proc/PID/stat` (R, S, D, T, Z, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether the process owns a file lock (`/proc/locks` names the owner's pid).
fn holds_lock(pid: i32) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let pid = pid.to_string();
    locks
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(pid.as_str()))
}
