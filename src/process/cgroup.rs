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

/// Prefix of the name of every worker cgroup we create: `tom-ledger-{pid}-{ticks}-{n}`.
const NAME_PREFIX: &str = "tom-ledger-";

/// A recorded cgroup, accepted only when it is provably one we create: directly under our
/// own cgroup base, named as we name them, reached without `..` or symlinks, and created
/// by this process or by one that no longer runs (a live supervisor's worker cgroup is
/// not ours to kill). `Ok(None)`: it does not exist (any more). `Err`: why it is refused.
pub(crate) fn owned_cgroup(path: &Path) -> Result<Option<Cgroup>, String> {
    use std::path::Component;
    let shown = path.display();
    if !path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!(
            "cgroup `{shown}` is not an absolute, normalised path"
        ));
    }
    let Some(base) = base_dir() else {
        return Err(format!(
            "cgroup `{shown}` cannot be ours: no cgroup subtree of tom-ledger here"
        ));
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return Err(format!("cgroup `{shown}` is outside {}", base.display()));
    };
    if parent != base {
        return Err(format!(
            "cgroup `{shown}` is outside tom-ledger's cgroup subtree {}",
            base.display()
        ));
    }
    let Some((pid, ticks)) = creator_of(name) else {
        return Err(format!(
            "cgroup `{shown}` is not named as tom-ledger names its cgroups"
        ));
    };
    if !path.join("cgroup.procs").exists() {
        return Ok(None);
    }
    match fs::canonicalize(path) {
        Ok(real) if real == path => {}
        _ => return Err(format!("cgroup `{shown}` is reached through a symlink")),
    }
    let creator = ProcessIdentity {
        pid,
        start_ticks: ticks,
        boot_id: super::identity::boot_id().map(str::to_owned),
        pid_ns: super::identity::pid_namespace(),
    };
    let me = ProcessIdentity::current();
    if me.as_ref() != Some(&creator) && creator.is_same_process_alive() {
        return Err(format!(
            "cgroup `{shown}` belongs to tom-ledger process {pid}, which still runs"
        ));
    }
    Ok(Some(Cgroup::existing(path.to_path_buf())))
}

/// The creator (pid, start ticks) named by a worker cgroup's name.
fn creator_of(name: &str) -> Option<(i32, u64)> {
    let mut parts = name.strip_prefix(NAME_PREFIX)?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let ticks = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next().is_none().then_some((pid, ticks))
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
            let path = base.join(format!("{NAME_PREFIX}{pid}-{ticks}-{n}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tell_their_creator() {
        assert_eq!(creator_of("tom-ledger-42-1000-3"), Some((42, 1000)));
        for bad in [
            "tom-ledger-42-1000",
            "tom-ledger-42-1000-3-4",
            "tom-ledger-x-1-2",
            "other-42-1000-3",
            "",
        ] {
            assert_eq!(creator_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_outside_the_subtree_are_refused() {
        for bad in [
            "relative/tom-ledger-1-2-3",
            "/sys/fs/cgroup/unified/../tom-ledger-1-2-3",
            "/",
            "/tmp/tom-ledger-1-2-3",
        ] {
            let err = owned_cgroup(Path::new(bad)).expect_err(bad);
            assert!(
                err.contains(bad.trim_end_matches('/')) || bad == "/",
                "{err}"
            );
        }
        if let Some(base) = base_dir() {
            let err = owned_cgroup(&base.join("someone-else")).expect_err("foreign name");
            assert!(err.contains("not named"), "{err}");
            let gone = base.join("tom-ledger-1-2-999999");
            assert!(owned_cgroup(&gone).expect("ours by name").is_none());
        }
    }
}
