//! The stop ladder: SIGTERM (+SIGCONT) to the whole group, a grace period, SIGKILL.
//!
//! The ladder returns as soon as nothing of the group is left, not when a timer runs out:
//! a worker that exits on SIGTERM in 20 ms costs 20 ms, not the grace. "Left" means a
//! live process; zombies are not counted, and our own direct child is reaped on the way
//! so none is left behind.
//!
//! [`stop_recorded`](super::stop_recorded) runs the same ladder on a group recorded
//! earlier, possibly by a supervisor that has died since (see `recorded.rs`).

use std::process::ExitStatus;
use std::time::Duration;

use tokio::time::Instant;

use super::child::Child;
use super::group::Group;
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
