//! The participant processes of one scenario run: started in process groups of their
//! own (with a parent-death signal, so none outlives the runner), commands written to
//! their stdin, their events read from stdout into one channel, the tail of their
//! stderr kept for the report, and the faults (real signals) sent to them.
//!
//! Every process signalled here is a child of this process that it has not reaped yet:
//! its pid cannot have been reused, which is the proof that it is ours.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::process::{Signal, StdioMode, Worker, WorkerCommand};

use super::protocol::{Command, Event};

/// Lines of a participant's stderr kept for the report.
const STDERR_TAIL: usize = 20;

/// How many times a hang is retried when the stopped process holds a ledger lock.
const HANG_ATTEMPTS: usize = 200;

/// What the output of the participants says, in arrival order.
#[derive(Debug)]
pub enum Message {
    Event(String, Event),
    /// A line that is not an event (reported, not acted upon).
    Garbage(String, String),
    /// The participant's stdout closed: it exited or was killed.
    Closed(String),
    /// The runner saw the operation leave the live ledger (Unix nanoseconds).
    Archived(u64),
}

/// One started participant.
pub struct Proc {
    pub name: String,
    pub pid: i32,
    worker: Worker,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    pub closed: bool,
    pub status: Option<ExitStatus>,
    pub hung: bool,
}

impl Proc {
    /// Start `exe args` as participant `name`; its events go to `events`.
    pub fn spawn(
        name: &str,
        exe: &PathBuf,
        args: Vec<OsString>,
        events: mpsc::UnboundedSender<Message>,
    ) -> Result<Proc> {
        let mut worker = WorkerCommand::new(exe)
            .args(args)
            .stdin(StdioMode::Piped)
            .stdout(StdioMode::Piped)
            .stderr(StdioMode::Piped)
            .parent_death_signal(Some(Signal::SIGKILL))
            .spawn()?;
        let stdin = worker.take_stdin();
        let stdout = worker
            .take_stdout()
            .ok_or_else(|| Error::invalid("participant", format!("`{name}` has no stdout")))?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = worker.take_stderr() {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        let who = name.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let message = match serde_json::from_str::<Event>(&line) {
                    Ok(event) => Message::Event(who.clone(), event),
                    Err(_) => Message::Garbage(who.clone(), line),
                };
                if events.send(message).is_err() {
                    return;
                }
            }
            let _ = events.send(Message::Closed(who));
        });
        Ok(Proc {
            name: name.to_string(),
            pid: worker.pid(),
            worker,
            stdin,
            stderr: stderr_tail,
            closed: false,
            status: None,
            hung: false,
        })
    }

    /// Send one command; false when the participant no longer reads them.
    pub async fn send(&mut self, command: &Command) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        let Ok(mut line) = serde_json::to_string(command) else {
            return false;
        };
        line.push('\n');
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            self.stdin = None;
            return false;
        }
        true
    }

    pub fn signal(&self, sig: Signal) -> bool {
        self.status.is_none() && matches!(self.worker.signal_group(sig), Ok(true))
    }

    /// Stop the process (SIGSTOP) at a moment it holds no ledger lock: a stopped lock
    /// holder would hang everyone's writes, which is a fault of another kind. Returns
    /// whether it is stopped.
    pub async fn hang(&mut self) -> bool {
        for _ in 0..HANG_ATTEMPTS {
            if !self.signal(Signal::SIGSTOP) {
                return false;
            }
            if !self.wait_stopped().await {
                self.signal(Signal::SIGCONT);
                return false;
            }
            if !holds_lock(self.pid) {
                self.hung = true;
                return true;
            }
            self.signal(Signal::SIGCONT);
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }

    /// Wait until the kernel shows the process as stopped (bounded).
    async fn wait_stopped(&self) -> bool {
        for _ in 0..2000 {
            match proc_state(self.pid) {
                Some('T') => return true,
                Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                None => return false,
            }
        }
        false
    }

    /// Continue a hung process.
    pub fn resume(&mut self) {
        if self.hung {
            self.signal(Signal::SIGCONT);
            self.hung = false;
        }
    }

    /// Reap the process once its stdout has closed, waiting at most `bound`.
    pub async fn reap(&mut self, bound: Duration) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Ok(status)) = tokio::time::timeout(bound, self.worker.wait()).await
        {
            self.status = Some(status);
        }
        self.status
    }

    /// Kill a leftover (SIGCONT first, should it be stopped) and reap it.
    pub async fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGKILL);
        self.signal(Signal::SIGCONT);
        self.reap(Duration::from_secs(10)).await
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The state letter of `/proc/PID/stat` (R, S, D, T, Z, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Whether the process holds a file lock (`/proc/locks` names the owner's pid).
fn holds_lock(pid: i32) -> bool {
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let pid = pid.to_string();
    locks
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(pid.as_str()))
}
