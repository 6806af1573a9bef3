//! Escape-proof containment on Linux: one cgroup v2 per worker.
//!
//! A process group does not hold a descendant that calls `setsid(2)` or `setpgid(2)`: it
//! leaves the group and survives a group kill. A cgroup does hold it: only a privileged
//! write to another `cgroup.procs` moves a process out, and `cgroup.kill` (Linux 5.14)
//! kills every member atomically, including ones forking at that moment.
//!
//! The worker is moved in from its `pre_exec` hook by writing `"0"` to a `cgroup.procs`
//! descriptor opened before the fork (no allocation or path lookup after the fork), so
//! neither the worker nor anything it starts ever runs outside the cgroup.
//!
//! Where no writable cgroup v2 hierarchy exists (cgroup v1 only, no permission), the
//! fallback is [`enable_subreaper`] plus the tree scan in `group.rs`: the supervisor
//! becomes a child subreaper, so orphaned descendants are reparented to it instead of to
//! init, and descendants are found by the parent-pid tree and by a tag in their inherited
//! environment. That catches `setsid` escapees that keep the environment, not a process
//! that also clears its environment after its parent died.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::identity::ProcessIdentity;

/// `statfs` magic of a cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The directory under which worker cgroups are created, if a writable cgroup v2 exists.
///
/// Tried in order: our own cgroup on `/sys/fs/cgroup` (pure v2), then on
/// `/sys/fs/cgroup/unified` (hybrid), then the root of either. Checked once per process.
pub(crate) fn base_dir() -> Option<&'static Path> {
    static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
    BASE.get_or_init(find_base).as_deref()
}

fn find_base() -> Option<PathBuf> {
    let own = own_cgroup_path();
    let mut candidates = Vec::new();
    for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let mount = Path::new(mount);
        if !is_cgroup2(mount) {
            continue;
        }
        if let Some(own) = &own {
            candidates.push(mount.join(own.trim_start_matches('/')));
        }
        candidates.push(mount.to_path_buf());
    }
    candidates.into_iter().find(|dir| probe_writable(dir))
}

/// Our cgroup v2 path (the `0::` line of `/proc/self/cgroup`).
fn own_cgroup_path() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .filter(|p| !p.contains(" (deleted)"))
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
}

/// Creates and removes a probe cgroup: the only sure test of permission.
fn probe_writable(dir: &Path) -> bool {
    let probe = dir.join(format!("tom-ledger-probe-{}", std::process::id()));
    match fs::create_dir(&probe) {
        Ok(()) => {
            let usable = probe.join("cgroup.procs").exists();
            let _ = fs::remove_dir(&probe);
            usable
        }
        Err(_) => false,
    }
}

/// One worker's cgroup.
#[derive(Debug)]
pub(crate) struct Cgroup {
    path: PathBuf,
    /// `cgroup.procs`, open for writing until the worker has been spawned.
    procs: Option<OwnedFd>,
}

impl Cgroup {
    /// Creates a fresh cgroup for one worker, or `None` when no writable cgroup v2 exists.
    ///
    /// The name holds our pid, our start time and a counter, so it is unique within a
    /// boot and recovery can trust that a recorded cgroup that still exists is ours.
    pub fn create() -> io::Result<Option<Cgroup>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Some(base) = base_dir() else {
            return Ok(None);
        };
        let me = ProcessIdentity::current();
        let (pid, ticks) = me.map_or((std::process::id() as i32, 0), |m| (m.pid, m.start_ticks));
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("tom-ledger-{pid}-{ticks}-{n}"));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let procs = OpenOptions::new()
                        .write(true)
                        .open(path.join("cgroup.procs"))
                        .inspect_err(|_| {
                            let _ = fs::remove_dir(&path);
                        })?;
                    return Ok(Some(Cgroup {
                        path,
                        procs: Some(procs.into()),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Refers to an existing cgroup (recorded by a supervisor that may have died).
    pub fn existing(path: PathBuf) -> Cgroup {
        Cgroup { path, procs: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor the `pre_exec` hook writes `"0"` to.
    pub fn procs_fd(&self) -> Option<RawFd> {
        self.procs.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Closes the `cgroup.procs` descriptor once the worker is inside.
    pub fn spawned(&mut self) {
        self.procs = None;
    }

    /// The pids in the cgroup (exited processes are not listed).
    pub fn members(&self) -> Vec<i32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether any process is left in the cgroup (`populated 1` in `cgroup.events`).
    pub fn is_populated(&self) -> bool {
        match fs::read_to_string(self.path.join("cgroup.events")) {
            Ok(events) => events.lines().any(|l| l.trim() == "populated 1"),
            Err(_) => false,
        }
    }

    pub fn exists(&self) -> bool {
        self.path.join("cgroup.procs").exists()
    }

    /// SIGKILLs every member at once through `cgroup.kill`; on kernels without it, each
    /// listed member.
    pub fn kill(&self) -> io::Result<()> {
        match File::options()
            .write(true)
            .open(self.path.join("cgroup.kill"))
        {
            Ok(mut f) => f.write_all(b"1"),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.exists() => {
                for pid in self.members() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the (empty) cgroup directory. Missing already counts as removed.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), once.
///
/// Orphaned descendants of our workers are then reparented to us rather than to init, so
/// they stay visible in the parent-pid tree and we can reap them.
pub(crate) fn enable_subreaper() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 }
    })
}
