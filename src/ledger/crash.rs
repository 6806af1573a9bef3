//! Crash detection: finding dead participants and acting on it.
//!
//! - Participants on this machine (same host and boot id) are watched through pidfds: a
//!   SIGKILLed peer is seen within milliseconds. The recorded start time guards against
//!   pid reuse.
//! - Every participant is also judged by heartbeat age at each beat: remote peers, and
//!   local ones that are alive but hung (SIGSTOP), are declared crashed past the stale
//!   threshold.
//!
//! Declaring a participant crashed (`declare_crashed`) fences it (its epoch is dead, its
//! later writes are refused), marks its frames `crashed`, and then either starts the
//! cleanup with this participant as coordinator (a crashed frame had `fail_on_crash`) or
//! contains the crash (only its calls fail; its temp resources and recorded workers are
//! removed). When the coordinator of a running cleanup dies, the detector takes over.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::ids::{CallId, ParticipantId};
use crate::model::{
    FailureRecord, FrameState, LedgerData, LogLevel, OperationState, ParticipantState,
    ProcessRecord,
};
use crate::process::{ProcessIdentity, RecordedGroup, exited, stop_recorded};

use super::failure::{coordinate, remove_path};
use super::liveness;
use super::shared::{OpShared, spawn};

/// Start watching the local peers of `data` that are not watched yet.
pub(crate) fn watch_peers(shared: &Arc<OpShared>, data: &LedgerData) {
    let me = &shared.ledger.config.participant;
    for (id, p) in &data.participants {
        if id == me || p.state != ParticipantState::Active || !liveness::is_local(p, &shared.ledger)
        {
            continue;
        }
        let Some(start_ticks) = p.start_ticks else {
            continue;
        };
        {
            let mut local = shared.local();
            if !local.watched_peers.insert((id.clone(), p.epoch)) {
                continue;
            }
        }
        let identity = ProcessIdentity {
            pid: p.pid,
            start_ticks,
            boot_id: p.boot_id.clone(),
        };
        let weak: Weak<OpShared> = Arc::downgrade(shared);
        let id = id.clone();
        let epoch = p.epoch;
        spawn(async move {
            exited(&identity).await;
            if let Some(shared) = weak.upgrade() {
                let why = format!("process {} exited", identity.pid);
                declare_crashed(&shared, &id, epoch, &why).await;
            }
        });
    }
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
            match data.operation_state {
                OperationState::Running if fatal => {
                    data.enter_cleanup(
                        now,
                        FailureRecord {
                            reason: format!("participant `{participant}` crashed ({why})"),
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
            let coordinator = shared.clone();
            spawn(async move { coordinate(coordinator).await });
        }
        Decision::Contained { temps, workers } => {
            shared
                .log_quietly(
                    LogLevel::Warning,
                    &format!("CRASH_CONTAINED participant={participant} calls=[{calls}] reason={why}{origin}"),
                )
                .await;
            for path in &temps {
                remove_path(Path::new(path));
            }
            stop_workers(&workers, grace_of(shared)).await;
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

/// Stop recorded worker groups, each only after its identity checks out.
pub(crate) async fn stop_workers(workers: &[ProcessRecord], grace: Duration) -> usize {
    let mut stopped = 0;
    for w in workers {
        let group = RecordedGroup {
            leader: ProcessIdentity {
                pid: w.pid,
                start_ticks: w.start_ticks,
                boot_id: w.boot_id.clone(),
            },
            pgid: w.pgid,
            cgroup: w.cgroup.as_ref().map(Into::into),
        };
        let result = stop_recorded(&group, Some(grace)).await;
        if matches!(
            result.verdict,
            crate::process::Verdict::LeaderAlive | crate::process::Verdict::MembersRemained
        ) {
            stopped += 1;
        }
    }
    stopped
}

fn grace_of(shared: &OpShared) -> Duration {
    shared
        .local()
        .worker_grace
        .unwrap_or(crate::process::DEFAULT_GRACE)
}

/// Judge the participants of a heartbeat's view: stale ones are declared crashed.
pub(crate) async fn check_stale(
    shared: &Arc<OpShared>,
    data: &LedgerData,
    stale: &[ParticipantId],
) {
    for id in stale {
        if let Some(p) = data.participants.get(id)
            && p.state == ParticipantState::Active
        {
            declare_crashed(shared, id, p.epoch, "heartbeat stale").await;
        }
    }
}
