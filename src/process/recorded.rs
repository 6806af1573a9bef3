//! Stopping a worker group recorded earlier, possibly by a supervisor that has died since,
//! signalling only what proves it belongs to the record.
//!
//! A record is input, not proof: it may be stale (pids are reused) or planted. So:
//!
//! - A process is signalled when its identity matches the record (pid + start time +
//!   boot id + PID namespace), or when it proves membership itself: its environment
//!   holds the record's `member_proof` entry (workers inherit their operation's id).
//! - A live leader with a matching identity is stopped with its process group, but only
//!   when it still leads that group; a group whose leader is gone is never signalled by
//!   number: each remaining member is checked on its own.
//! - Init, pid/pgid 1 and below, and this process and its group are never targets.
//! - A recorded cgroup is used only when it is provably one we created (see
//!   [`owned_cgroup`]); anything else is ignored and reported.
//!
//! [`plan_recorded`] finds the targets without acting (what `recover --dry-run` lists);
//! [`stop_recorded`] finds them the same way and runs the stop ladder on them.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::cgroup::owned_cgroup;
use super::group::{Containment, Group, group_members};
use super::identity::ProcessIdentity;
use super::procfs::{self, ProcStat};
use super::signal::StopReason;
use super::stop::{StopEnd, StopOutcome, ladder};

/// A worker group as recorded in a ledger: enough to stop it safely later, from any
/// process on the same machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedGroup {
    /// The worker that leads the group.
    pub leader: ProcessIdentity,
    pub pgid: i32,
    /// The worker's cgroup, in escape-proof mode.
    pub cgroup: Option<PathBuf>,
    /// `NAME=value` that a process's environment must hold to prove it belongs to this
    /// record once the leader is gone (e.g. `TOM_LEDGER_OPERATION=<op>`). Without it,
    /// members left by a dead leader are never signalled.
    pub member_proof: Option<String>,
}

impl RecordedGroup {
    /// Sets the environment entry that proves membership.
    pub fn member_proof(mut self, entry: impl Into<String>) -> Self {
        self.member_proof = Some(entry.into());
        self
    }
}

/// What [`stop_recorded`] found before it acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The leader still runs with the recorded identity: its group was stopped.
    LeaderAlive,
    /// The leader is gone; members of its cgroup, or members of its group that proved
    /// membership, remained and were stopped.
    MembersRemained,
    /// Nothing of the group is left that proves it belongs to the record.
    Gone,
    /// The pid now belongs to another process: nothing was signalled.
    PidReused,
    /// Recorded in another boot: nothing of it can be running.
    OtherBoot,
    /// Recorded in another PID namespace: its pids mean nothing here.
    OtherNamespace,
    /// The record names init, this process or its group: nothing was signalled.
    Refused,
}

/// A process a recorded stop would signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedProcess {
    pub pid: i32,
    /// Its command line now (empty when unreadable).
    pub command: Vec<String>,
}

/// What [`plan_recorded`] found: the processes that would be signalled and what the
/// record named that was not accepted as proof.
#[derive(Debug)]
pub struct StopPlan {
    pub verdict: Verdict,
    pub processes: Vec<PlannedProcess>,
    /// One line per thing named by the record and refused, with the reason.
    pub refused: Vec<String>,
    target: Option<Target>,
}

/// What a plan would stop: built into a [`Group`] only when the stop runs (a dropped
/// group with a cgroup removes it, which a dry run must never do).
#[derive(Debug)]
struct Target {
    containment: Containment,
    signal_pgid: bool,
}

/// The result of [`stop_recorded`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStop {
    pub verdict: Verdict,
    pub outcome: StopOutcome,
    /// What the record named that was not accepted as proof, and why.
    pub refused: Vec<String>,
}

/// The processes a stop of `group` would signal now, without signalling anything.
pub fn plan_recorded(group: &RecordedGroup) -> StopPlan {
    let mut plan = find_target(group);
    if let Some(target) = &plan.target {
        let own_pid = std::process::id() as i32;
        plan.processes = listed(&target.containment, group.pgid)
            .into_iter()
            .filter(|s| s.pid > 1 && s.pid != own_pid)
            .map(|s| PlannedProcess {
                pid: s.pid,
                command: procfs::command_line(s.pid),
            })
            .collect();
    }
    plan
}

/// What a stop of `group` would act on, without listing its processes (a stop lists
/// them itself as it signals: listing them here too would scan `/proc` twice).
fn find_target(group: &RecordedGroup) -> StopPlan {
    let mut refused = Vec::new();
    let leader = &group.leader;
    let nothing = |verdict, refused| StopPlan {
        verdict,
        processes: Vec::new(),
        refused,
        target: None,
    };
    if !leader.is_current_boot() {
        return nothing(Verdict::OtherBoot, refused);
    }
    if leader.pid_ns.is_some() && !leader.is_current_pid_namespace() {
        return nothing(Verdict::OtherNamespace, refused);
    }
    let own_pid = std::process::id() as i32;
    let own_pgid = nix::unistd::getpgrp().as_raw();
    if leader.pid <= 1 || leader.pid == own_pid || group.pgid <= 1 || group.pgid == own_pgid {
        refused.push(format!(
            "pid {} / process group {} is init, every process or tom-ledger itself: never signalled",
            leader.pid, group.pgid
        ));
        return nothing(Verdict::Refused, refused);
    }
    // Without a known namespace the recorded pid proves nothing: only members that carry
    // the proof themselves count.
    let leader_now = if leader.is_current_pid_namespace() {
        procfs::read_stat(leader.pid)
    } else {
        None
    };
    let leader_alive = leader_now
        .as_ref()
        .filter(|s| leader.matches(s) && !s.has_exited());
    if leader_now.as_ref().is_some_and(|s| !leader.matches(s)) {
        // The old group is gone: a pid is not reused while it names a group.
        return nothing(Verdict::PidReused, refused);
    }
    let cgroup = match &group.cgroup {
        None => None,
        Some(path) => owned_cgroup(path).unwrap_or_else(|why| {
            refused.push(format!("{why}: ignored"));
            None
        }),
    };
    let leads_group = leader_alive.is_some_and(|s| group.pgid == leader.pid && s.pgrp == s.pid);
    let (verdict, containment) = match (cgroup, leader_alive) {
        (Some(cg), alive) => {
            let verdict = if alive.is_some() {
                Verdict::LeaderAlive
            } else {
                Verdict::MembersRemained
            };
            (verdict, Containment::Cgroup(cg))
        }
        (None, Some(_)) if leads_group => (Verdict::LeaderAlive, Containment::Group),
        (None, Some(stat)) => {
            refused.push(format!(
                "process group {} is not led by pid {}: only that process is signalled",
                group.pgid, leader.pid
            ));
            (Verdict::LeaderAlive, Containment::Pids(vec![stat.clone()]))
        }
        (None, None) => {
            let members = proven_members(group, &mut refused);
            if members.is_empty() {
                return nothing(Verdict::Gone, refused);
            }
            (Verdict::MembersRemained, Containment::Pids(members))
        }
    };
    StopPlan {
        verdict,
        processes: Vec::new(),
        refused,
        target: Some(Target {
            containment,
            signal_pgid: leads_group,
        }),
    }
}

/// The live processes a containment holds now.
fn listed(containment: &Containment, pgid: i32) -> Vec<ProcStat> {
    match containment {
        Containment::Group => group_members(pgid),
        Containment::Pids(pids) => pids.clone(),
        Containment::Cgroup(cg) => cg
            .members()
            .into_iter()
            .filter_map(procfs::read_stat)
            .filter(|s| !s.has_exited())
            .collect(),
        Containment::Tree { .. } => Vec::new(),
    }
}

/// Members of the recorded group (leader gone) that prove membership themselves;
/// the others are reported in `refused`.
fn proven_members(group: &RecordedGroup, refused: &mut Vec<String>) -> Vec<ProcStat> {
    let own_pid = std::process::id() as i32;
    let (proven, unproven): (Vec<ProcStat>, Vec<ProcStat>) = group_members(group.pgid)
        .into_iter()
        .filter(|s| s.pid > 1 && s.pid != own_pid)
        .partition(|s| {
            s.start_ticks >= group.leader.start_ticks
                && group
                    .member_proof
                    .as_deref()
                    .is_some_and(|entry| procfs::environ_contains(s.pid, entry))
        });
    if !unproven.is_empty() {
        let pids: Vec<String> = unproven.iter().map(|s| s.pid.to_string()).collect();
        refused.push(format!(
            "process group {} has lost its leader; pids {} do not prove they belong to it: not signalled",
            group.pgid,
            pids.join(", ")
        ));
    }
    proven
}

/// Stops a recorded worker group, signalling only what provably belongs to it (see the
/// module documentation). `grace: None` kills at once.
pub async fn stop_recorded(group: &RecordedGroup, grace: Option<Duration>) -> RecordedStop {
    let start = Instant::now();
    let plan = find_target(group);
    let Some(target) = plan.target else {
        return RecordedStop {
            verdict: plan.verdict,
            outcome: StopOutcome {
                end: StopEnd::AlreadyGone,
                status: None,
                elapsed: start.elapsed(),
                groups: 0,
            },
            refused: plan.refused,
        };
    };
    let mut group_of = Group::new(
        group.leader.pid,
        group.leader.start_ticks,
        target.containment,
    );
    group_of.pgid = group.pgid;
    group_of.signal_pgid = target.signal_pgid;
    let outcome = ladder(&[&group_of], grace, StopReason::Requested, None).await;
    let verdict = if outcome.end == StopEnd::AlreadyGone {
        Verdict::Gone
    } else {
        plan.verdict
    };
    RecordedStop {
        verdict,
        outcome,
        refused: plan.refused,
    }
}
