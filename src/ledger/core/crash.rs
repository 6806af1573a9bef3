//! Crash declaration → decision.
//!
//! Declaring a participant crashed fences it (its registration is marked `crashed`, so
//! its later writes are refused), marks its frames crashed, and decides:
//!
//! - the operation **fails** (through [`super::failure::fail`]) when one of its frames has
//!   `fail_on_crash`, or when it is the initiator (only the initiator may complete the
//!   operation, so without it the operation could never end) — unless it was started by
//!   another call's worker, whose call reports the crash through its own `fail_on_crash`;
//!   the declarer coordinates the cleanup;
//! - otherwise the crash is **contained**: its frames go, its recorded workers are stopped
//!   and its temp resources this host may delete are deleted;
//! - during a cleanup the crash is added to the failure, and the declarer takes the
//!   coordination over when the dead participant was the coordinator.

use crate::clock::Timestamp;
use crate::ids::ParticipantId;
use crate::model::{LedgerData, LogLevel, OperationState, ParticipantState};

use super::failure::{Failure, Takeover, fail};
use super::{Effect, Here, join_ids, temps};

/// Declare `participant`, registered at `epoch`, crashed for `why`, as `me`. Returns what
/// to do once the change is written; nothing (and no change) when the registration is
/// gone, re-registered, already crashed or left.
pub(crate) fn declare_crashed(
    data: &mut LedgerData,
    participant: &ParticipantId,
    epoch: u64,
    why: &str,
    me: &ParticipantId,
    here: &Here,
    now: Timestamp,
) -> Vec<Effect> {
    let Some(record) = data.participants.get_mut(participant) else {
        return Vec::new();
    };
    if record.epoch != epoch || record.state != ParticipantState::Active {
        return Vec::new();
    }
    record.state = ParticipantState::Crashed;
    let spawned_by = record.spawned_by.clone();
    let (calls, mut fatal) = super::frames::crash(data, participant);
    data.detection_timestamp.get_or_insert(now);
    // Started by a call's worker: the crash is that call's to report (its worker died,
    // and the call fails with it), so it is contained here.
    if spawned_by.is_some() {
        fatal = false;
    }
    let initiator = data.initiator_id == *participant;
    fatal |= initiator;
    let who = if initiator {
        "initiator"
    } else {
        "participant"
    };
    let origin = spawned_by
        .map(|c| format!(" spawnedBy={c}"))
        .unwrap_or_default();
    let listed = join_ids(&calls);
    let detected = |level, tag| {
        Effect::Log(
            level,
            format!("{tag} participant={participant} calls=[{listed}] reason={why}{origin}"),
        )
    };
    match data.operation_state {
        OperationState::Running if !fatal => {
            let workers = data
                .call_frames
                .iter()
                .filter(|f| &f.participant_id == participant)
                .filter_map(|f| f.process.clone())
                .collect();
            data.call_frames
                .retain(|f| &f.participant_id != participant);
            let swept = temps::sweep(data, Some(participant), here);
            vec![
                detected(LogLevel::Warning, "CRASH_CONTAINED"),
                Effect::DeleteTemps(swept.delete),
                Effect::StopWorkers(workers),
            ]
        }
        OperationState::Running | OperationState::Cleanup => {
            let failure = Failure {
                reason: format!("{who} `{participant}` crashed ({why})"),
                crashed_calls: calls.clone(),
                crashed_participants: vec![participant.clone()],
                by: me.clone(),
                takeover: Takeover::FromDead(participant.clone()),
            };
            if fail(data, now, failure).coordinates() {
                vec![
                    detected(LogLevel::Error, "CRASH_DETECTED"),
                    Effect::Log(LogLevel::Info, format!("CLEANUP_STARTED coordinator={me}")),
                    Effect::Coordinate,
                ]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::core::fixtures::*;
    use crate::model::FrameState;

    fn declare(data: &mut LedgerData, who: &str, epoch: u64) -> Vec<Effect> {
        declare_crashed(
            data,
            &pid(who),
            epoch,
            "process 7 exited",
            &pid("me"),
            &here(),
            at(5),
        )
    }

    #[test]
    fn a_contained_crash_removes_the_dead_ones_calls_workers_and_temps() {
        let mut data = operation("init", &["me", "b"]);
        let mut f = frame("b", "b1", false);
        f.process = Some(worker(4242));
        data.call_frames.push(f);
        data.call_frames.push(frame("me", "m1", true));
        data.temp_resources.push(temp("/t/b", Some("b")));
        data.temp_resources.push(temp("/t/me", Some("me")));
        let effects = declare(&mut data, "b", 3);
        assert_eq!(data.operation_state, OperationState::Running);
        assert_eq!(
            data.participants[&pid("b")].state,
            ParticipantState::Crashed
        );
        assert_eq!(data.detection_timestamp, Some(at(5)));
        assert_eq!(data.call_frames.len(), 1, "only the dead one's frames go");
        assert_eq!(data.temp_resources.len(), 1);
        assert!(matches!(&effects[0], Effect::Log(LogLevel::Warning, l)
            if l == "CRASH_CONTAINED participant=b calls=[b1] reason=process 7 exited"));
        assert_eq!(effects[1], Effect::DeleteTemps(vec!["/t/b".into()]));
        assert_eq!(effects[2], Effect::StopWorkers(vec![worker(4242)]));
    }

    #[test]
    fn a_fail_on_crash_frame_fails_the_operation_with_the_declarer_coordinating() {
        let mut data = operation("init", &["me", "b"]);
        data.call_frames.push(frame("b", "b1", true));
        data.temp_resources.push(temp("/t/b", Some("b")));
        let effects = declare(&mut data, "b", 3);
        assert_eq!(data.operation_state, OperationState::Cleanup);
        let record = data.failure.as_ref().unwrap();
        assert_eq!(record.reason, "participant `b` crashed (process 7 exited)");
        assert_eq!(record.crashed_call_ids, vec![call("b1")]);
        assert_eq!(record.crashed_participants, vec![pid("b")]);
        assert_eq!(record.coordinator, Some(pid("me")));
        assert_eq!(
            data.call_frames[0].state,
            FrameState::Crashed,
            "kept for the cleanup"
        );
        assert_eq!(data.temp_resources.len(), 1, "the coordinator removes it");
        assert_eq!(effects.last(), Some(&Effect::Coordinate));
        assert!(
            matches!(&effects[0], Effect::Log(LogLevel::Error, l) if l.starts_with("CRASH_DETECTED"))
        );
    }

    #[test]
    fn the_initiators_death_fails_the_operation_whatever_its_frames() {
        let mut data = operation("init", &["me"]);
        data.call_frames.push(frame("init", "i1", false));
        let effects = declare(&mut data, "init", 1);
        assert_eq!(data.operation_state, OperationState::Cleanup);
        assert!(
            data.failure
                .as_ref()
                .unwrap()
                .reason
                .starts_with("initiator `init` crashed")
        );
        assert_eq!(effects.last(), Some(&Effect::Coordinate));
        // Without any frame too.
        let mut data = operation("init", &["me"]);
        declare(&mut data, "init", 1);
        assert_eq!(data.operation_state, OperationState::Cleanup);
    }

    #[test]
    fn a_participant_started_by_a_worker_is_its_calls_to_report() {
        let mut data = operation("init", &["me", "nested"]);
        data.participants
            .get_mut(&pid("nested"))
            .unwrap()
            .spawned_by = Some(call("c9"));
        data.call_frames.push(frame("nested", "n1", true));
        let effects = declare(&mut data, "nested", 3);
        assert_eq!(data.operation_state, OperationState::Running);
        assert!(data.call_frames.is_empty());
        assert!(matches!(&effects[0], Effect::Log(_, l) if l.ends_with("spawnedBy=c9")));
    }

    #[test]
    fn a_stale_epoch_or_a_settled_participant_is_no_crash() {
        let mut data = operation("init", &["me", "b"]);
        data.call_frames.push(frame("b", "b1", true));
        let before = data.clone();
        assert!(declare(&mut data, "b", 2).is_empty(), "re-registered since");
        assert!(declare(&mut data, "gone", 1).is_empty(), "left and dropped");
        assert_eq!(data, before);
        data.participants.get_mut(&pid("b")).unwrap().state = ParticipantState::Left;
        let before = data.clone();
        assert!(declare(&mut data, "b", 3).is_empty());
        assert_eq!(data, before);
    }

    #[test]
    fn the_coordinators_death_during_cleanup_hands_it_to_the_declarer() {
        let mut data = operation("init", &["me", "coord", "b"]);
        data.call_frames.push(frame("coord", "c1", true));
        declare_crashed(
            &mut data,
            &pid("init"),
            1,
            "x",
            &pid("coord"),
            &here(),
            at(1),
        );
        assert_eq!(
            data.failure.as_ref().unwrap().coordinator,
            Some(pid("coord"))
        );
        // Another participant dies: added to the record, the coordinator stays.
        assert!(declare(&mut data, "b", 4).is_empty());
        let record = data.failure.as_ref().unwrap();
        assert_eq!(record.coordinator, Some(pid("coord")));
        assert_eq!(record.crashed_participants, vec![pid("init"), pid("b")]);
        // The coordinator dies: the declarer takes over.
        let effects = declare(&mut data, "coord", 3);
        let record = data.failure.as_ref().unwrap();
        assert_eq!(record.coordinator, Some(pid("me")));
        assert_eq!(record.crashed_call_ids, vec![call("c1")]);
        assert_eq!(effects.last(), Some(&Effect::Coordinate));
        assert_eq!(data.operation_state, OperationState::Cleanup);
    }
}
