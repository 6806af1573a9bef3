//! Signals and the reasons a worker is stopped, as types.
//!
//! Every signal the process layer sends goes through the guarded helpers here: they refuse
//! targets that would hit the supervisor itself (pid or pgid 0, 1, our own pid or our own
//! process group), because a negative or zero pid given to `kill(2)` reaches far more than
//! intended.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Why a worker is being stopped (defined with the error type, which carries it).
pub use crate::error::StopReason;

/// Refuses pids and pgids that would hit the supervisor or everything.
fn check_target(what: &str, id: i32) -> Result<()> {
    let own_pid = std::process::id() as i32;
    let own_pgid = nix::unistd::getpgrp().as_raw();
    if id <= 1 || id == own_pid || id == own_pgid {
        return Err(Error::invalid(
            format!("{what} `{id}`"),
            "refusing to signal the supervisor itself, init or every process",
        ));
    }
    Ok(())
}

/// Sends `sig` (or only checks existence with `None`) to every process of group `pgid`.
///
/// `Ok(false)` when the group does not exist (any more).
pub fn signal_group(pgid: i32, sig: Option<Signal>) -> Result<bool> {
    check_target("process group", pgid)?;
    match signal::killpg(Pid::from_raw(pgid), sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(Error::sys("killpg", e)),
    }
}

/// Sends `sig` to the single process `pid`. `Ok(false)` when it does not exist.
pub fn signal_pid(pid: i32, sig: Signal) -> Result<bool> {
    check_target("pid", pid)?;
    match signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(Error::sys("kill", e)),
    }
}

/// A handle on one process that stays tied to it even if its pid is reused (`pidfd`).
///
/// Used to signal processes found by scanning `/proc` without the race between checking a
/// pid and signalling it: open the handle, verify the identity, then signal through it.
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a handle on `pid`; `None` if it does not exist or pidfds are unavailable.
    pub fn open(pid: i32) -> Option<PidFd> {
        if pid <= 1 {
            return None;
        }
        // SAFETY: plain system call with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sends `sig` to the process behind the handle. `false` if it has exited.
    pub fn signal(&self, sig: Signal) -> bool {
        // SAFETY: plain system call; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_signal_itself_or_everyone() {
        let me = std::process::id() as i32;
        let own_group = nix::unistd::getpgrp().as_raw();
        for id in [0, 1, -5, me, own_group] {
            assert!(signal_group(id, None).is_err(), "group {id}");
            assert!(signal_pid(id, Signal::SIGTERM).is_err(), "pid {id}");
        }
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(StopReason::Cancelled.to_string(), "cancelled");
        assert_eq!(
            StopReason::Shutdown(Signal::SIGINT).to_string(),
            "supervisor shutting down on SIGINT"
        );
    }
}
