//! The worker's process as its parent sees it: started through Tokio (`posix_spawn`, or
//! fork with a `pre_exec` hook), or directly with `clone` (`vfork.rs`), in which case this
//! layer waits for it itself through a pidfd.
//!
//! Both kinds offer the same: the pid, waiting (cancel-safe), polling, and the piped
//! standard streams as Tokio's `ChildStdin`/`ChildStdout`/`ChildStderr`.
//!
//! Caveat of the direct kind: it is reaped with `waitpid` on its own pid. Code in the
//! same process that reaps any child (`waitpid(-1)`, e.g. a SIGCHLD handler that reaps
//! everything) would take its exit status, and waiting then fails with `ECHILD` (Tokio's
//! child handling does not do that). A direct child dropped before it was reaped is reaped
//! by a short-lived thread, so no zombie is left.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::vfork::{self, ParentEnds, Spawned};

#[derive(Debug)]
pub(crate) enum Child {
    Tokio(tokio::process::Child),
    Direct(DirectChild),
}

impl Child {
    /// The pid; `None` once a Tokio child has been reaped.
    pub fn id(&self) -> Option<u32> {
        match self {
            Child::Tokio(c) => c.id(),
            Child::Direct(c) => Some(c.pid as u32),
        }
    }

    /// Waits for the process to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Child::Tokio(c) => c.wait().await,
            Child::Direct(c) => c.wait().await,
        }
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            Child::Tokio(c) => c.try_wait(),
            Child::Direct(c) => c.try_wait(),
        }
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        match self {
            Child::Tokio(c) => c.stdin.take(),
            Child::Direct(c) => c.stdin.take(),
        }
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        match self {
            Child::Tokio(c) => c.stdout.take(),
            Child::Direct(c) => c.stdout.take(),
        }
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        match self {
            Child::Tokio(c) => c.stderr.take(),
            Child::Direct(c) => c.stderr.take(),
        }
    }
}

/// A child started with `clone`, waited for through its pidfd.
#[derive(Debug)]
pub(crate) struct DirectChild {
    pid: libc::pid_t,
    /// Readable once the process has exited; `None` once it is reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl DirectChild {
    /// Takes ownership of a spawned child and the supervisor's ends of its pipes. Must be
    /// called within a Tokio runtime. On error the child's group is killed and the child
    /// reaped.
    pub fn new(spawned: Spawned, ends: ParentEnds) -> io::Result<DirectChild> {
        let mut child = DirectChild {
            pid: spawned.pid,
            pidfd: None,
            status: None,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        match child.attach(spawned.pidfd, ends) {
            Ok(()) => Ok(child),
            Err(e) => {
                // SAFETY: kill(2) on the group our unreaped child leads.
                unsafe {
                    libc::kill(-child.pid, libc::SIGKILL);
                }
                if let Some(status) = vfork::reap_blocking(child.pid) {
                    child.status = Some(ExitStatus::from_raw(status));
                }
                Err(e)
            }
        }
    }

    fn attach(&mut self, pidfd: OwnedFd, ends: ParentEnds) -> io::Result<()> {
        // SAFETY: the pidfd is an open descriptor the `AsyncFd` owns until it is dropped.
        self.pidfd =
            Some(unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)? });
        let [stdin, stdout, stderr] = ends;
        if let Some(fd) = stdin {
            self.stdin = Some(ChildStdin::from_std(std::process::ChildStdin::from(fd))?);
        }
        if let Some(fd) = stdout {
            self.stdout = Some(ChildStdout::from_std(std::process::ChildStdout::from(fd))?);
        }
        if let Some(fd) = stderr {
            self.stderr = Some(ChildStderr::from_std(std::process::ChildStderr::from(fd))?);
        }
        Ok(())
    }

    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let Some(pidfd) = &self.pidfd else {
                return Err(io::Error::other("the worker's pidfd is gone"));
            };
            let mut ready = pidfd.readable().await?;
            match reap_nohang(self.pid)? {
                Some(status) => {
                    drop(ready);
                    return Ok(self.reaped(status));
                }
                // Not exited after all: wait for the next readiness (one that arrived
                // since is kept by `clear_ready`).
                None => ready.clear_ready(),
            }
        }
    }

    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        Ok(reap_nohang(self.pid)?.map(|status| self.reaped(status)))
    }

    fn reaped(&mut self, status: ExitStatus) -> ExitStatus {
        self.status = Some(status);
        self.pidfd = None;
        status
    }
}

/// `waitpid(pid, WNOHANG)`: the status if `pid` has exited (and is now reaped).
fn reap_nohang(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own, not yet reaped child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if rc == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Drop for DirectChild {
    fn drop(&mut self) {
        if self.status.is_some() || !matches!(self.try_wait(), Ok(None)) {
            return;
        }
        // Still running: reap it once it ends, without blocking the caller.
        self.pidfd = None;
        let pid = self.pid;
        let reaper = std::thread::Builder::new()
            .name("worker-reaper".into())
            .spawn(move || vfork::reap_blocking(pid));
        if let Err(e) = reaper {
            tracing::warn!(pid, error = %e, "cannot start a thread to reap a dropped worker");
        }
    }
}
