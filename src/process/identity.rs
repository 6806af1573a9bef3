//! Who a process is, beyond its pid.
//!
//! Pids are reused. A pid alone recorded in a ledger can, minutes later, name an unrelated
//! process, and signalling it would be a serious bug. A [`ProcessIdentity`] adds the
//! process start time (in clock ticks since boot, field 22 of `/proc/PID/stat`) and the
//! boot id: two processes with the same pid never share a start time within one boot.
//! And the PID namespace: a pid means something only in the namespace it was read in (a
//! container sharing the host name, boot id and a ledger volume has pids of its own), so
//! a record from another namespace is never matched against this one's processes.

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
    /// Inode of the PID namespace the pid was read in (`/proc/self/ns/pid`), if known.
    pub pid_ns: Option<u64>,
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
            pid_ns: pid_namespace(),
        }
    }

    /// Whether this identity was recorded in the current boot (unknown counts as yes).
    pub fn is_current_boot(&self) -> bool {
        match (&self.boot_id, boot_id()) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        }
    }

    /// Whether the pid was recorded in this PID namespace. Unknown counts as no: a pid
    /// from an unknown namespace proves nothing here.
    pub fn is_current_pid_namespace(&self) -> bool {
        self.pid_ns.is_some() && self.pid_ns == pid_namespace()
    }

    /// Whether the very process recorded here still runs: same boot and PID namespace,
    /// its pid exists, has not exited (zombies count as gone) and started at the recorded
    /// time. A process that reused the pid is never taken for the recorded one.
    pub fn is_same_process_alive(&self) -> bool {
        self.is_current_boot()
            && self.is_current_pid_namespace()
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

/// The clock tick since boot that is now (`/proc/PID/stat`'s unit for start times:
/// the boot-time clock in `sysconf(_SC_CLK_TCK)` units, rounded down as the kernel
/// does); `None` where that cannot be computed exactly.
pub(crate) fn boot_tick_now() -> Option<u64> {
    static NS_PER_TICK: OnceLock<Option<u64>> = OnceLock::new();
    let per_tick = (*NS_PER_TICK.get_or_init(|| {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        let hz = u64::try_from(hz).ok().filter(|hz| *hz > 0)?;
        (1_000_000_000 % hz == 0).then(|| 1_000_000_000 / hz)
    }))?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    let ns = u64::try_from(now.tv_sec).ok()? * 1_000_000_000 + u64::try_from(now.tv_nsec).ok()?;
    Some(ns / per_tick)
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

/// The inode of this process's PID namespace (`/proc/self/ns/pid`), read once.
pub fn pid_namespace() -> Option<u64> {
    static PID_NS: OnceLock<Option<u64>> = OnceLock::new();
    *PID_NS.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
    })
}

/// The real user id of this process.
pub fn user_id() -> u32 {
    nix::unistd::getuid().as_raw()
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
    fn other_or_unknown_pid_namespace_is_not_alive() {
        let mut me = ProcessIdentity::current().expect("own identity");
        assert!(me.pid_ns.is_some() && me.is_current_pid_namespace());
        me.pid_ns = me.pid_ns.map(|n| n + 1);
        assert!(!me.is_same_process_alive());
        me.pid_ns = None;
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
