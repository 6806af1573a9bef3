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

    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("peer exits in time")
            .expect("wait peer")
    }
}
