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

use crate::ids::{CallId, OperationId, ParticipantId};
use crate::model::{
    FailureRecord, FrameState, LedgerData, LogLevel, OperationState, ParticipantState,
    ProcessRecord,
};
use crate::process::{ProcessIdentity, RecordedGroup, Verdict, stop_recorded};

use crate::presence::{PresenceEvent, PresenceEvents};

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

/// What a crash declaration decided.
enum Decision {
    /// Nothing to do (already handled, left in order, or re-registered).
    Nothing,
    /// The operation fails; this participant coordinates the cleanup.
    Coordinate,
    /// The crash is contained to the dead participant's own calls.
    Contained {
        temps: Vec<String>,
        workers: Vec<ProcessRecord>,
    },
}

/// Declare `participant` (at `epoch`) crashed, unless that already happened or it left.
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
    let host = shared.ledger.identity.host.clone();
    let mut decision = Decision::Nothing;
    let mut crashed_calls: Vec<CallId> = Vec::new();
    let result = shared
        .modify(|data, now| {
            decision = Decision::Nothing;
            crashed_calls.clear();
            let Some(record) = data.participants.get_mut(participant) else {
                return Ok(());
            };
            if record.epoch != epoch || record.state != ParticipantState::Active {
                return Ok(());
            }
            record.state = ParticipantState::Crashed;
            // Started by a call's worker: the crash is that call's to report (its worker
            // died, and the call fails or has failed with it), so it is contained here and
            // the call decides through its own `fail_on_crash`.
            let reported_to = record.spawned_by.clone();
            let mut fatal = false;
            for frame in data
                .call_frames
                .iter_mut()
                .filter(|f| &f.participant_id == participant)
            {
                frame.state = FrameState::Crashed;
                fatal |= frame.fail_on_crash;
                crashed_calls.push(frame.call_id.clone());
            }
            data.detection_timestamp.get_or_insert(now);
            if reported_to.is_some() {
                fatal = false;
            }
            // Only the initiator may complete the operation: without it the operation
            // could never end, so its death fails the operation whatever its frames.
            let initiator = data.initiator_id == *participant;
            fatal |= initiator;
            let who = if initiator {
                "initiator"
            } else {
                "participant"
            };
            match data.operation_state {
                OperationState::Running if fatal => {
                    data.enter_cleanup(
                        now,
                        FailureRecord {
                            reason: format!("{who} `{participant}` crashed ({why})"),
                            crashed_call_ids: crashed_calls.clone(),
                            crashed_participants: vec![participant.clone()],
                            coordinator: Some(me.clone()),
                        },
                    );
                    decision = Decision::Coordinate;
                }
                OperationState::Running => {
                    let workers = data
                        .call_frames
                        .iter()
                        .filter(|f| &f.participant_id == participant)
                        .filter_map(|f| f.process.clone())
                        .collect();
                    data.call_frames
                        .retain(|f| &f.participant_id != participant);
                    let temps = take_temps_of(data, participant, &host);
                    decision = Decision::Contained { temps, workers };
                }
                OperationState::Cleanup => {
                    let failure = data.failure.get_or_insert_with(|| FailureRecord {
                        reason: format!("participant `{participant}` crashed ({why})"),
                        crashed_call_ids: Vec::new(),
                        crashed_participants: Vec::new(),
                        coordinator: None,
                    });
                    failure.crashed_participants.push(participant.clone());
                    failure
                        .crashed_call_ids
                        .extend(crashed_calls.iter().cloned());
                    // The coordinator itself died: this participant finishes the cleanup.
                    if failure
                        .coordinator
                        .as_ref()
                        .is_none_or(|c| c == participant)
                    {
                        failure.coordinator = Some(me.clone());
                        decision = Decision::Coordinate;
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .await;
    if result.is_err() {
        return;
    }
    let spawned_by = shared
        .local()
        .cached
        .as_ref()
        .and_then(|d| d.participants.get(participant))
        .and_then(|p| p.spawned_by.clone());
    let calls = super::operation::join_ids(&crashed_calls);
    let origin = spawned_by
        .map(|c| format!(" spawnedBy={c}"))
        .unwrap_or_default();
    match decision {
        Decision::Nothing => {}
        Decision::Coordinate => {
            shared
                .log_quietly(
                    LogLevel::Error,
                    &format!("CRASH_DETECTED participant={participant} calls=[{calls}] reason={why}{origin}"),
                )
                .await;
            shared
                .log_quietly(LogLevel::Info, &format!("CLEANUP_STARTED coordinator={me}"))
                .await;
            super::failure::start_coordination(shared);
        }
        Decision::Contained { temps, workers } => {
            shared
                .log_quietly(
                    LogLevel::Warning,
                    &format!("CRASH_CONTAINED participant={participant} calls=[{calls}] reason={why}{origin}"),
                )
                .await;
            super::temps::delete_stored(&shared.ledger, &shared.id, &temps).await;
            stop_workers(&shared.id, &workers, grace_of(shared)).await;
        }
    }
}

/// Take the temp resources owned by `participant` that this host can delete.
pub(crate) fn take_temps_of(
    data: &mut LedgerData,
    participant: &ParticipantId,
    host: &str,
) -> Vec<String> {
    let owner_host = data.participants.get(participant).map(|p| p.host.clone());
    if owner_host.is_some_and(|h| !h.is_empty() && h != host) {
        return Vec::new();
    }
    let (theirs, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut data.temp_resources)
        .into_iter()
        .partition(|t| t.owner_id.as_ref() == Some(participant));
    data.temp_resources = rest;
    theirs.into_iter().map(|t| t.path).collect()
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

fn grace_of(shared: &OpShared) -> Duration {
    shared
        .local()
        .worker_grace
        .unwrap_or(crate::process::DEFAULT_GRACE)
}
