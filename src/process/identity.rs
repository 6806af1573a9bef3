//! Who a process is, beyond its pid.
//!
//! Pids are reused. A pid alone recorded in a ledger can, minutes later, name an unrelated
//! process, and signalling it would be a serious bug. A [`ProcessIdentity`] adds the
//! process start time (in clock ticks since boot, field 22 of `/proc/PID/stat`) and the
//! boot id: two processes with the same pid never share a start time within one boot.

use std::fmt;
use std::sync::OnceLock;

use super::procfs::{self, ProcStat};

/// A process as recorded: pid, start time and boot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot the process ran in, if known.
    pub boot_id: Option<String>,
}

impl ProcessIdentity {
    /// The identity of the process `pid` now, or `None` if there is no such process.
    ///
    /// An exited child that was not reaped yet (a zombie) still has an identity, so a
    /// worker that exits at once can still be recorded.
    pub fn of(pid: i32) -> Option<Self> {
        let stat = procfs::read_stat(pid)?;
        Some(Self::from_stat(&stat))
    }

    /// The identity of the calling process.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id() as i32)
    }

    pub(crate) fn from_stat(stat: &ProcStat) -> Self {
        ProcessIdentity {
            pid: stat.pid,
            start_ticks: stat.start_ticks,
            boot_id: boot_id().map(str::to_owned),
        }
    }

    /// Whether this identity was recorded in the current boot (unknown counts as yes).
    pub fn is_current_boot(&self) -> bool {
        match (&self.boot_id, boot_id()) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        }
    }

    /// Whether the very process recorded here still runs: same boot, its pid exists, has
    /// not exited (zombies count as gone) and started at the recorded time. A process that
    /// reused the pid is never taken for the recorded one.
    pub fn is_same_process_alive(&self) -> bool {
        self.is_current_boot()
            && procfs::read_stat(self.pid)
                .is_some_and(|s| s.start_ticks == self.start_ticks && !s.has_exited())
    }

    /// Whether `stat` describes this very process (same pid and start time).
    pub(crate) fn matches(&self, stat: &ProcStat) -> bool {
        stat.pid == self.pid && stat.start_ticks == self.start_ticks
    }
}

impl fmt::Display for ProcessIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} started at tick {}", self.pid, self.start_ticks)
    }
}

/// The id of the running boot (`/proc/sys/kernel/random/boot_id`), read once.
pub fn boot_id() -> Option<&'static str> {
    static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// The host name, or `"localhost"` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_identity_is_alive() {
        let me = ProcessIdentity::current().expect("own identity");
        assert!(me.is_same_process_alive());
        assert!(me.is_current_boot());
        assert!(boot_id().is_some_and(|b| b.len() >= 32));
        assert!(!hostname().is_empty());
    }

    #[test]
    fn other_start_time_is_not_the_same_process() {
        let mut me = ProcessIdentity::current().expect("own identity");
        me.start_ticks += 1;
        assert!(!me.is_same_process_alive());
    }

    #[test]
    fn other_boot_is_not_alive() {
        let mut me = ProcessIdentity::current().expect("own identity");
        me.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
        assert!(!me.is_current_boot());
        assert!(!me.is_same_process_alive());
    }
}
