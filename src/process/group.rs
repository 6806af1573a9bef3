//! The set of processes one worker stands for, however it is contained.
//!
//! A worker leads its own process group. Depending on the containment, its set is that
//! group alone, the group plus everything in its cgroup, or the group plus every process
//! found through the parent-pid tree or the inherited environment tag. Members that have
//! exited but wait to be reaped (zombies) are not members: they hold no resources but a
//! pid, and whoever reaps them is not necessarily us.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::cgroup::Cgroup;
use super::procfs::{self, ProcStat};
use super::signal::{PidFd, Signal, StopReason, signal_group};

/// How a worker's processes are held together.
#[derive(Debug)]
pub(crate) enum Containment {
    /// The process group only: descendants that call `setsid` escape.
    Group,
    /// The process group inside a cgroup v2 of its own.
    Cgroup(Cgroup),
    /// Exactly these processes, each signalled only while its start time matches (used
    /// for recorded groups whose leader is gone).
    Pids(Vec<ProcStat>),
    /// Fallback without cgroups: process group + parent-pid tree + environment tag, with
    /// the supervisor as child subreaper.
    Tree {
        /// `NAME=value` entry in the environment of every descendant.
        tag: String,
        /// Pids seen as members, so that orphans reparented to us can be reaped.
        seen: Mutex<HashSet<i32>>,
    },
}

/// One worker's processes.
#[derive(Debug)]
pub(crate) struct Group {
    /// The worker (group leader) pid.
    pub pid: i32,
    /// The leader's start time; the tree scan starts from the leader only while it matches.
    pub leader_start: u64,
    pub pgid: i32,
    /// Whether signalling the whole process group is safe: true for our own workers and
    /// for recorded groups whose leader was verified alive.
    pub signal_pgid: bool,
    pub containment: Containment,
    /// Set by whoever stops the group first, so the runner can report why it ended.
    reason: OnceLock<StopReason>,
    /// Set once the process group was seen empty: a group never gains members once it
    /// has none (its id, if reused later, is someone else's group).
    gone: AtomicBool,
}

impl Group {
    pub fn new(pid: i32, leader_start: u64, containment: Containment) -> Group {
        Group {
            pid,
            leader_start,
            pgid: pid,
            signal_pgid: true,
            containment,
            reason: OnceLock::new(),
            gone: AtomicBool::new(false),
        }
    }

    /// Records why the group is being stopped; the first reason wins.
    pub fn mark_stopping(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    /// The live (not exited) processes of the group, with their start times.
    pub fn members(&self) -> Vec<ProcStat> {
        match &self.containment {
            Containment::Group => group_members(self.pgid),
            Containment::Pids(pids) => pids
                .iter()
                .filter(|p| {
                    procfs::read_stat(p.pid)
                        .is_some_and(|s| s.start_ticks == p.start_ticks && !s.has_exited())
                })
                .cloned()
                .collect(),
            Containment::Cgroup(cg) => {
                let mut members: Vec<ProcStat> = cg
                    .members()
                    .into_iter()
                    .filter_map(procfs::read_stat)
                    .filter(|s| !s.has_exited())
                    .collect();
                if !cg.exists() && self.signal_pgid {
                    // The cgroup is gone (removed from outside): fall back to the group,
                    // when the group is provably ours.
                    members = group_members(self.pgid);
                }
                members
            }
            Containment::Tree { tag, seen } => {
                let members = tree_members(self.pid, self.leader_start, self.pgid, tag);
                if let Ok(mut seen) = seen.lock() {
                    seen.extend(members.iter().map(|s| s.pid));
                }
                members
            }
        }
    }

    /// Whether no live process of the group is left. Cheap when the group is gone.
    pub fn is_empty(&self) -> bool {
        match &self.containment {
            Containment::Group => {
                if self.gone.load(Ordering::Acquire) {
                    return true;
                }
                let empty = group_is_empty(self.pgid);
                if empty {
                    self.gone.store(true, Ordering::Release);
                }
                empty
            }
            Containment::Cgroup(cg) if cg.exists() => {
                !cg.is_populated() || self.members().is_empty()
            }
            _ => self.members().is_empty(),
        }
    }

    /// SIGTERM and then SIGCONT to every member: a stopped process only acts on SIGTERM
    /// once continued.
    pub fn terminate(&self) {
        self.send(Signal::SIGTERM);
        self.send(Signal::SIGCONT);
    }

    /// SIGKILL to every member; through `cgroup.kill` when there is a cgroup.
    pub fn kill(&self) {
        if let Containment::Cgroup(cg) = &self.containment
            && let Err(e) = cg.kill()
        {
            tracing::warn!(cgroup = %cg.path().display(), error = %e, "cgroup.kill failed");
        }
        self.send(Signal::SIGKILL);
    }

    /// Sends `sig` to the process group (when that is safe) and to members outside it.
    pub fn send(&self, sig: Signal) {
        if self.signal_pgid {
            if let Err(e) = signal_group(self.pgid, Some(sig)) {
                tracing::warn!(pgid = self.pgid, error = %e, "cannot signal worker group");
            }
            if matches!(self.containment, Containment::Group) {
                return;
            }
        }
        for member in self.members() {
            if !self.signal_pgid || member.pgrp != self.pgid {
                signal_verified(&member, sig);
            }
        }
    }

    /// Reaps exited members that were reparented to us (fallback mode only). The worker
    /// itself is left to its owner, which reaps it through its `Child`.
    pub fn reap_orphans(&self) {
        let Containment::Tree { seen, .. } = &self.containment else {
            return;
        };
        let me = std::process::id() as i32;
        let seen: Vec<i32> = match seen.lock() {
            Ok(seen) => seen.iter().copied().collect(),
            Err(_) => return,
        };
        for pid in seen {
            if pid == self.pid {
                continue;
            }
            if procfs::read_stat(pid).is_some_and(|s| s.ppid == me && s.has_exited()) {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

/// Signals the process of `stat` only if it is still that process (pidfd, then recheck).
pub(crate) fn signal_verified(stat: &ProcStat, sig: Signal) -> bool {
    let Some(fd) = PidFd::open(stat.pid) else {
        return false;
    };
    let same = procfs::read_stat(stat.pid).is_some_and(|now| now.start_ticks == stat.start_ticks);
    same && fd.signal(sig)
}

fn group_is_empty(pgid: i32) -> bool {
    match signal_group(pgid, None) {
        Ok(false) => true,
        // Something answers: zombies do too, so look closer.
        _ => group_members(pgid).is_empty(),
    }
}

/// Live members of process group `pgid`.
pub(crate) fn group_members(pgid: i32) -> Vec<ProcStat> {
    if matches!(signal_group(pgid, None), Ok(false)) {
        return Vec::new();
    }
    procfs::all_stats()
        .into_iter()
        .filter(|s| s.pgrp == pgid && !s.has_exited())
        .collect()
}

/// Live processes in the group, below `pid` in the parent-pid tree, or carrying `tag`.
fn tree_members(pid: i32, leader_start: u64, pgid: i32, tag: &str) -> Vec<ProcStat> {
    let stats = procfs::all_stats();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for s in &stats {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    // The leader's pid is a root only while it is still the leader (not reused).
    let mut roots: Vec<i32> = stats
        .iter()
        .filter(|s| s.pid == pid && s.start_ticks == leader_start)
        .map(|s| s.pid)
        .collect();
    roots.extend(
        stats
            .iter()
            .filter(|s| s.pgrp == pgid || procfs::environ_contains(s.pid, tag))
            .map(|s| s.pid),
    );
    let mut found: HashSet<i32> = HashSet::new();
    while let Some(p) = roots.pop() {
        if found.insert(p) {
            roots.extend(children.get(&p).into_iter().flatten().copied());
        }
    }
    stats
        .into_iter()
        .filter(|s| found.contains(&s.pid) && !s.has_exited())
        .collect()
}

impl Drop for Group {
    /// Removes the worker's cgroup. If processes are still in it, they are killed and the
    /// directory is removed from a short-lived thread once they are gone.
    fn drop(&mut self) {
        let Containment::Cgroup(cg) = &self.containment else {
            return;
        };
        if cg.remove().is_ok() {
            return;
        }
        let _ = cg.kill();
        let cg = super::cgroup::Cgroup::existing(cg.path().to_path_buf());
        let _ = std::thread::Builder::new()
            .name("cgroup-remove".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while cg.remove().is_err() && std::time::Instant::now() < deadline {
                    let _ = cg.kill();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
    }
}
