//! The stop ladder: SIGTERM (+SIGCONT) to the whole group, a grace period, SIGKILL.
//!
//! The ladder returns as soon as nothing of the group is left, not when a timer runs out:
//! a worker that exits on SIGTERM in 20 ms costs 20 ms, not the grace. "Left" means a
//! live process; zombies are not counted, and our own direct child is reaped on the way
//! so none is left behind.
//!
//! [`stop_recorded`] runs the same ladder on a group recorded earlier, possibly by a
//! supervisor that has died since, and only after checking that the processes it would
//! signal are the recorded ones.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::time::Instant;

use super::cgroup::Cgroup;
use super::child::Child;
use super::group::{Containment, Group};
use super::identity::ProcessIdentity;
use super::procfs;
use super::signal::StopReason;

/// Grace between SIGTERM and SIGKILL unless configured otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How long processes may take to vanish after SIGKILL before they are reported as
/// lingering (a process stuck in uninterruptible sleep cannot die sooner).
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// Longest pause between two checks whether the group is gone.
const MAX_POLL: Duration = Duration::from_millis(10);

/// How a stop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopEnd {
    /// Nothing of the group was running when the stop was requested.
    AlreadyGone,
    /// Everything ended within the grace after SIGTERM.
    Terminated,
    /// Something outlived the grace (or the grace was skipped) and was SIGKILLed.
    Killed,
    /// These pids were still there after SIGKILL and [`KILL_WAIT`].
    Lingering(Vec<i32>),
}

/// What a stop did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopOutcome {
    pub end: StopEnd,
    /// The exit status of the direct child, when we own and reaped it.
    pub status: Option<ExitStatus>,
    /// From the stop request until the group was gone (or given up on).
    pub elapsed: Duration,
    /// How many groups the stop covered (more than one for a registry-wide stop).
    pub groups: usize,
}

impl StopOutcome {
    /// Whether nothing of the group is left.
    pub fn is_gone(&self) -> bool {
        !matches!(self.end, StopEnd::Lingering(_))
    }
}

/// Runs the ladder on `groups` together. `grace: None` skips SIGTERM and kills at once.
/// `child`, when given, is the leader we own: it is reaped on the way.
pub(crate) async fn ladder(
    groups: &[&Group],
    grace: Option<Duration>,
    reason: StopReason,
    mut child: Option<&mut Child>,
) -> StopOutcome {
    let start = Instant::now();
    for g in groups {
        g.mark_stopping(reason);
    }
    let mut status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    let outcome = |end, status, groups| StopOutcome {
        end,
        status,
        elapsed: start.elapsed(),
        groups,
    };
    let n = groups.len();
    if groups.iter().all(|g| g.is_empty()) {
        let status = reap(&mut child, status).await;
        return outcome(StopEnd::AlreadyGone, status, n);
    }
    if let Some(grace) = grace {
        for g in groups {
            g.terminate();
        }
        if wait_gone(groups, &mut child, &mut status, start + grace).await {
            let status = reap(&mut child, status).await;
            return outcome(StopEnd::Terminated, status, n);
        }
    }
    for g in groups {
        g.kill();
    }
    let gone = wait_gone(groups, &mut child, &mut status, Instant::now() + KILL_WAIT).await;
    let status = reap(&mut child, status).await;
    if gone {
        outcome(StopEnd::Killed, status, n)
    } else {
        let pids = groups
            .iter()
            .flat_map(|g| g.members())
            .map(|s| s.pid)
            .collect();
        outcome(StopEnd::Lingering(pids), status, n)
    }
}

/// Waits until every group is empty or `deadline` passes; reaps the child when it exits.
async fn wait_gone(
    groups: &[&Group],
    child: &mut Option<&mut Child>,
    status: &mut Option<ExitStatus>,
    deadline: Instant,
) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        for g in groups {
            g.reap_orphans();
        }
        if groups.iter().all(|g| g.is_empty()) {
            // Members that exited since the last pass are zombies now: reap ours.
            for g in groups {
                g.reap_orphans();
            }
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let nap = tokio::time::sleep(pause.min(deadline - now));
        match child {
            Some(c) if status.is_none() => {
                tokio::select! {
                    s = c.wait() => *status = s.ok(),
                    _ = nap => {}
                }
            }
            _ => nap.await,
        }
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// Reaps the direct child once the group is gone (it is a zombie by then, or about to be).
async fn reap(child: &mut Option<&mut Child>, status: Option<ExitStatus>) -> Option<ExitStatus> {
    if status.is_some() {
        return status;
    }
    let c = child.as_mut()?;
    tokio::time::timeout(KILL_WAIT, c.wait()).await.ok()?.ok()
}

/// A worker group as recorded in a ledger: enough to stop it safely later, from any
/// process on the same machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedGroup {
    /// The worker that leads the group.
    pub leader: ProcessIdentity,
    pub pgid: i32,
    /// The worker's cgroup, in escape-proof mode.
    pub cgroup: Option<PathBuf>,
}

/// What [`stop_recorded`] found before it acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The leader still runs with the recorded start time: its group was stopped.
    LeaderAlive,
    /// The leader is gone, members of its group or cgroup remained and were stopped.
    MembersRemained,
    /// Nothing of the group is left.
    Gone,
    /// The pid now belongs to another process: nothing was signalled.
    PidReused,
    /// Recorded in another boot: nothing of it can be running.
    OtherBoot,
}

/// The result of [`stop_recorded`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStop {
    pub verdict: Verdict,
    pub outcome: StopOutcome,
}

/// Stops a recorded worker group, signalling only what provably belongs to it.
///
/// - Another boot: nothing to do.
/// - A recorded cgroup that still exists is ours (its name is unique within a boot): its
///   members are stopped and the cgroup removed.
/// - Leader alive with the recorded start time: the whole process group is stopped (while
///   the leader lives, no other group can have its pid as pgid).
/// - Leader pid taken by a process with another start time: the old group is necessarily
///   gone (a pid is not reused while it names a group); nothing is signalled.
/// - Leader gone on the same boot: members still in the group are stopped one by one
///   through pidfds, and only those started no earlier than the leader.
///
/// `grace: None` kills at once.
pub async fn stop_recorded(group: &RecordedGroup, grace: Option<Duration>) -> RecordedStop {
    let start = Instant::now();
    let nothing = |verdict| RecordedStop {
        verdict,
        outcome: StopOutcome {
            end: StopEnd::AlreadyGone,
            status: None,
            elapsed: start.elapsed(),
            groups: 0,
        },
    };
    let leader = &group.leader;
    if !leader.is_current_boot() {
        return nothing(Verdict::OtherBoot);
    }
    let leader_now = procfs::read_stat(leader.pid);
    let leader_alive = leader_now
        .as_ref()
        .is_some_and(|s| leader.matches(s) && !s.has_exited());
    let pid_reused = leader_now.as_ref().is_some_and(|s| !leader.matches(s));
    let cgroup = group
        .cgroup
        .clone()
        .map(Cgroup::existing)
        .filter(Cgroup::exists);

    let (verdict, containment) = match cgroup {
        Some(cg) if leader_alive => (Verdict::LeaderAlive, Containment::Cgroup(cg)),
        Some(cg) => (Verdict::MembersRemained, Containment::Cgroup(cg)),
        None if leader_alive => (Verdict::LeaderAlive, Containment::Group),
        None if pid_reused => return nothing(Verdict::PidReused),
        None => {
            let members: Vec<_> = super::group::group_members(group.pgid)
                .into_iter()
                .filter(|s| s.start_ticks >= leader.start_ticks)
                .collect();
            if members.is_empty() {
                return nothing(Verdict::Gone);
            }
            (Verdict::MembersRemained, Containment::Pids(members))
        }
    };
    let mut target = Group::new(leader.pid, leader.start_ticks, containment);
    target.pgid = group.pgid;
    target.signal_pgid = leader_alive && group.pgid == leader.pid;
    let outcome = ladder(&[&target], grace, StopReason::Requested, None).await;
    let verdict = if outcome.end == StopEnd::AlreadyGone {
        Verdict::Gone
    } else {
        verdict
    };
    RecordedStop { verdict, outcome }
}
