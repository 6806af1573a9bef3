//! Crash detection: finding dead participants and acting on it.
//!
//! Detection is presence's (`crate::presence`): peers on this machine are watched
//! through pidfds (a SIGKILLed peer is seen within milliseconds), and every participant
//! is judged by heartbeat age at each beat (remote peers, and local ones that are alive
//! but hung by SIGSTOP, expire past the stale threshold). This module follows presence's
//! expired events and declares those participants crashed.
//!
//! Declaring a participant crashed (`declare_crashed`) fences it (its epoch is dead, its
//! later writes are refused), marks its frames `crashed`, and then either starts the
//! cleanup with this participant as coordinator (a crashed frame had `fail_on_crash`, or
//! the dead participant is the initiator, without whom the operation can never end) or
//! contains the crash (only its calls fail; its temp resources and recorded workers are
//! removed). When the coordinator of a running cleanup dies, the detector takes over.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::ids::{OperationId, ParticipantId};
use crate::model::{ParticipantState, ProcessRecord};
use crate::process::{ProcessIdentity, RecordedGroup, Verdict, stop_recorded};

use crate::presence::{PresenceEvent, PresenceEvents};

use super::core;
use super::exec::ENV_OPERATION;
use super::shared::{OpShared, spawn};

/// Follow the presence events of this operation: every expired participant is
/// declared crashed, each in a task of its own so one slow containment (stopping a dead
/// peer's workers) delays no other detection. Ends with the operation's roster.
pub(crate) fn follow_presence(shared: &Arc<OpShared>, mut events: PresenceEvents) {
    let weak: Weak<OpShared> = Arc::downgrade(shared);
    spawn(async move {
        while let Some(event) = events.recv().await {
            let PresenceEvent::Expired {
                participant,
                epoch,
                reason,
            } = event
            else {
                continue;
            };
            let Some(shared) = weak.upgrade() else { break };
            spawn(async move {
                declare_crashed(&shared, &participant, epoch, &reason).await;
            });
        }
    });
}

/// Declare `participant` (at `epoch`) crashed, unless that already happened or it left;
/// the decision is the core's ([`core::crash::declare_crashed`]), carried out here.
pub(crate) async fn declare_crashed(
    shared: &Arc<OpShared>,
    participant: &ParticipantId,
    epoch: u64,
    why: &str,
) {
    // A peer that left in order (and was dropped from the registry) is no crash: seen
    // in a fresh read, that costs no write.
    if let Ok(data) = shared.ledger.store.read(&shared.id).await
        && !data
            .participants
            .get(participant)
            .is_some_and(|r| r.epoch == epoch && r.state == ParticipantState::Active)
    {
        return;
    }
    let me = shared.ledger.config.participant.clone();
    let here = super::recovery_proof::here(&shared.ledger.identity);
    let mut effects = Vec::new();
    let result = shared
        .modify(|data, now| {
            effects = core::crash::declare_crashed(data, participant, epoch, why, &me, &here, now);
            Ok(())
        })
        .await;
    if result.is_ok() {
        super::effects::run(shared, effects).await;
    }
}

/// What a recorded worker group of operation `op` is, for the process layer: its leader's
/// identity as recorded, and the operation's id in the environment as the proof of
/// membership its remaining processes must show once the leader is gone.
pub(crate) fn recorded_group(op: &OperationId, w: &ProcessRecord) -> RecordedGroup {
    RecordedGroup {
        leader: ProcessIdentity {
            pid: w.pid,
            start_ticks: w.start_ticks,
            boot_id: w.boot_id.clone(),
            pid_ns: w.pid_namespace,
        },
        pgid: w.pgid,
        cgroup: w.cgroup.as_ref().map(Into::into),
        member_proof: Some(format!("{ENV_OPERATION}={op}")),
    }
}

/// Stop recorded worker groups, each only on proof; returns how many were stopped.
pub(crate) async fn stop_workers(
    op: &OperationId,
    workers: &[ProcessRecord],
    grace: Duration,
) -> usize {
    stop_workers_reporting(op, workers, grace).await.0
}

/// [`stop_workers`], also returning what the records named that was refused, and why.
pub(crate) async fn stop_workers_reporting(
    op: &OperationId,
    workers: &[ProcessRecord],
    grace: Duration,
) -> (usize, Vec<String>) {
    let mut stopped = 0;
    let mut refused = Vec::new();
    for w in workers {
        let result = stop_recorded(&recorded_group(op, w), Some(grace)).await;
        if matches!(
            result.verdict,
            Verdict::LeaderAlive | Verdict::MembersRemained
        ) {
            stopped += 1;
        }
        refused.extend(result.refused);
    }
    (stopped, refused)
}

pub(crate) fn grace_of(shared: &OpShared) -> Duration {
    shared
        .local()
        .worker_grace
        .unwrap_or(shared.ledger.config.worker_grace)
}
