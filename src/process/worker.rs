//! A running worker: its pid, group, identity and streams, and ways to wait for it or
//! stop it.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::child::Child;

use super::group::{Containment, Group};
use super::identity::ProcessIdentity;
use super::recorded::RecordedGroup;
use super::registry::Registration;
use super::signal::{Signal, StopReason, signal_group};
use super::stop::{StopOutcome, ladder};
use crate::error::{Error, Result};

/// What the layer above records about a started worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub pid: i32,
    /// The process group the worker leads (equal to `pid`).
    pub pgid: i32,
    pub identity: ProcessIdentity,
    /// Program and arguments.
    pub command: Vec<String>,
    /// The worker's cgroup, in escape-proof mode.
    pub cgroup: Option<PathBuf>,
}

impl WorkerInfo {
    /// The record [`stop_recorded`](super::stop_recorded) needs to stop this group later.
    pub fn recorded(&self) -> RecordedGroup {
        RecordedGroup {
            leader: self.identity.clone(),
            pgid: self.pgid,
            cgroup: self.cgroup.clone(),
            member_proof: None,
        }
    }
}

/// A started worker.
///
/// Dropping it while anything of its group still runs SIGKILLs the group (a supervisor
/// does not leave workers behind by accident); [`stop`](Worker::stop) is the orderly way.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    info: WorkerInfo,
    program: String,
    group: Arc<Group>,
    registration: Option<Registration>,
    status: Option<ExitStatus>,
}

impl Worker {
    pub(crate) fn new(
        child: Child,
        info: WorkerInfo,
        group: Arc<Group>,
        registration: Registration,
        program: String,
    ) -> Worker {
        Worker {
            child,
            info,
            program,
            group,
            registration: Some(registration),
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.info.pid
    }

    pub fn pgid(&self) -> i32 {
        self.info.pgid
    }

    pub fn identity(&self) -> &ProcessIdentity {
        &self.info.identity
    }

    pub fn info(&self) -> &WorkerInfo {
        &self.info
    }

    /// The program as it was given to [`WorkerCommand::new`](super::WorkerCommand::new).
    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.take_stdin()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.take_stdout()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.take_stderr()
    }

    /// Why the group was stopped, if someone stopped it (this handle, a registry-wide
    /// stop, a signal handler).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.group.stop_reason()
    }

    /// Waits for the worker itself to exit and reaps it. Its descendants may live on; see
    /// [`stop`](Worker::stop). Cancel-safe.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::io("wait for worker", &self.program, e))?;
        self.exited(status);
        Ok(status)
    }

    /// The exit status if the worker has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let status = self
            .child
            .try_wait()
            .map_err(|e| Error::io("wait for worker", &self.program, e))?;
        if let Some(status) = status {
            self.exited(status);
        }
        Ok(status)
    }

    fn exited(&mut self, status: ExitStatus) {
        self.status = Some(status);
        if self.group.is_empty() {
            self.registration = None;
        }
    }

    /// Sends `sig` to the worker's whole process group (and, escape-proof, to members
    /// that left it). `Ok(false)` when the group is gone.
    pub fn signal_group(&self, sig: Signal) -> Result<bool> {
        if self.group.is_empty() {
            return Ok(false);
        }
        if matches!(self.group.containment, Containment::Group) {
            return signal_group(self.info.pgid, Some(sig));
        }
        self.group.send(sig);
        Ok(true)
    }

    /// The stop ladder: SIGTERM + SIGCONT to the group, up to `grace` for it to go,
    /// SIGKILL; returns as soon as the group is gone, with the worker reaped.
    pub async fn stop(&mut self, grace: Duration) -> StopOutcome {
        self.stop_with(Some(grace), StopReason::Requested).await
    }

    /// SIGKILLs the group at once (no grace) and waits until it is gone.
    pub async fn kill(&mut self) -> StopOutcome {
        self.stop_with(None, StopReason::Requested).await
    }

    /// The ladder with a reason that [`stop_reason`](Worker::stop_reason) reports;
    /// `grace: None` skips SIGTERM.
    pub async fn stop_with(&mut self, grace: Option<Duration>, reason: StopReason) -> StopOutcome {
        let mut outcome = ladder(&[&self.group], grace, reason, Some(&mut self.child)).await;
        if outcome.status.is_none() {
            outcome.status = self.status;
        }
        if let Some(status) = outcome.status {
            self.status = Some(status);
        }
        if outcome.is_gone() {
            self.registration = None;
        }
        outcome
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.group.is_empty() {
            tracing::debug!(
                pid = self.info.pid,
                "worker dropped while running; killing its group"
            );
            self.group.mark_stopping(StopReason::Dropped);
            self.group.kill();
        }
    }
}
