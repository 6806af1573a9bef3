//! The server backend's `tom-ledger serve`: this same executable, started by the runner
//! for one scenario on a free loopback port (`--port 0`: the kernel picks it, no race)
//! over a ledger directory in the scenario's scratch directory, with a token of its own
//! in a 0600 file there. Ready once it printed where it listens; stopped when the
//! scenario ends, and killed with its process group when dropped (on Ctrl+C, a failure)
//! or when the runner dies (parent-death signal).
//!
//! The process signalled here is our own child, not reaped yet: its pid cannot have been
//! reused, which is the proof that it is ours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::error::{Error, Result};
use crate::ledger::Connect;
use crate::process::{Signal, StdioMode, Worker, WorkerCommand};
use crate::server::auth;

/// How long the server may take to say where it listens (a loaded machine).
const START_BOUND: Duration = Duration::from_secs(60);

/// A running `tom-ledger serve` of one scenario.
#[derive(Debug)]
pub struct OwnServer {
    worker: Option<Worker>,
    url: String,
    token: String,
    token_file: PathBuf,
}

impl OwnServer {
    /// Start `exe serve` over `scratch/server-ledger`, its token in `scratch/token`.
    pub async fn start(exe: &Path, scratch: &Path) -> Result<OwnServer> {
        let ledger_dir = scratch.join("server-ledger");
        let token_file = scratch.join("token");
        let token = auth::write_token(&token_file)?;
        let mut worker = WorkerCommand::new(exe)
            .arg("--ledger")
            .arg(&ledger_dir)
            .arg("--token-file")
            .arg(&token_file)
            .args(["--json", "serve", "--bind", "127.0.0.1", "--port", "0"])
            .stdin(StdioMode::Null)
            .stdout(StdioMode::Piped)
            .stderr(StdioMode::Piped)
            .parent_death_signal(Some(Signal::SIGKILL))
            .spawn()?;
        let stdout = worker.take_stdout();
        let stderr = worker.take_stderr();
        let first = async {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line).await;
            }
            line
        };
        let line = match tokio::time::timeout(START_BOUND, first).await {
            Ok(line) => line,
            Err(_) => {
                let _ = worker.kill().await;
                return Err(Error::Timeout {
                    after: START_BOUND,
                    what: "the simulator's `tom-ledger serve` to listen".into(),
                });
            }
        };
        let url = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_string));
        let Some(url) = url else {
            // It exited (or said something else): its stderr says why.
            let _ = worker.kill().await;
            let mut why = String::new();
            if let Some(mut err) = stderr {
                let _ = tokio::time::timeout(Duration::from_secs(5), err.read_to_string(&mut why))
                    .await;
            }
            let why = why.trim().replace('\n', " | ");
            return Err(Error::invalid(
                "the simulator's `tom-ledger serve`",
                format!("did not start: `{}` {why}", line.trim()),
            ));
        };
        if let Some(err) = stderr {
            // Drained so the server never blocks on a full pipe; its diagnostics are
            // not the scenario's.
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(_)) = lines.next_line().await {}
            });
        }
        Ok(OwnServer {
            worker: Some(worker),
            url,
            token,
            token_file,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The 0600 file holding the token, for participants' `--token-file`.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The server as a ledger to connect to (with its token).
    pub fn connect(&self) -> Connect {
        Connect::remote(&self.url).token(&self.token)
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.worker.as_ref().map(Worker::pid)
    }

    /// Stop the server (SIGTERM, a short grace, SIGKILL) and reap it.
    pub async fn stop(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            let _ = worker.stop(Duration::from_secs(5)).await;
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        // Dropped while it runs (Ctrl+C, a failure): the worker's drop SIGKILLs its
        // group; its ledger directory goes with the scratch directory once it is dead.
        if let Some(mut worker) = self.worker.take() {
            // Not reaped yet: the pid is still its own.
            let running = matches!(worker.try_wait(), Ok(None));
            let pid = worker.pid();
            drop(worker);
            if running {
                super::wait_dead(pid, Duration::from_secs(5));
            }
        }
    }
}
