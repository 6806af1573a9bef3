//! Waiting for *any* process to exit (not only our children), for fast crash detection of
//! participants on this machine.
//!
//! A pidfd becomes readable when its process exits, so a peer killed with SIGKILL is seen
//! within milliseconds. The identity is checked after the pidfd is opened: if the pid
//! already names another process (reused), the recorded one is gone. Where pidfds are
//! missing (kernels before 5.3), the identity is polled instead.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::identity::ProcessIdentity;

/// How often the identity is checked when no pidfd can be had.
const POLL: Duration = Duration::from_millis(100);

/// Resolves once the process recorded in `identity` no longer runs.
pub async fn exited(identity: &ProcessIdentity) {
    let Some(fd) = open_pidfd(identity.pid) else {
        return poll_until_gone(identity).await;
    };
    // Opened after the check would race: check after opening, the pidfd pins the process.
    if !identity.is_same_process_alive() {
        return;
    }
    // SAFETY: the descriptor is owned by the `AsyncFd` and closed only when it is dropped,
    // after deregistration.
    match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        Err(_) => poll_until_gone(identity).await,
    }
}

async fn poll_until_gone(identity: &ProcessIdentity) {
    while identity.is_same_process_alive() {
        tokio::time::sleep(POLL).await;
    }
}

fn open_pidfd(pid: i32) -> Option<OwnedFd> {
    if pid <= 1 {
        return None;
    }
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_a_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let identity = ProcessIdentity::of(child.id() as i32).unwrap();
        let waiter = tokio::spawn(async move { exited(&identity).await });
        child.kill().unwrap();
        child.wait().unwrap();
        tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .expect("exit seen")
            .unwrap();
    }

    #[tokio::test]
    async fn a_reused_pid_counts_as_gone() {
        let mut me = ProcessIdentity::current().unwrap();
        me.start_ticks += 1;
        tokio::time::timeout(Duration::from_secs(5), exited(&me))
            .await
            .expect("at once");
    }
}
