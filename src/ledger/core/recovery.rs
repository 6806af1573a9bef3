//! What recovering an abandoned operation changes.
//!
//! Whether an operation is abandoned (all its participants dead) is judged outside, from
//! a read, by pid and start time or heartbeat age. Between that read and the change,
//! someone may have joined or beaten: the change is applied only when the [`Roster`] (who
//! is registered, at which epoch and state, and every heartbeat) is still the one judged;
//! otherwise the edge judges again.
//!
//! Taking over: every active participant is declared crashed, every frame crashed, and
//! the operation fails (through [`super::failure::fail`]) with the recovering participant
//! as coordinator. The removal is the coordinator's ([`super::cleanup::remove`]).

use crate::clock::Timestamp;
use crate::ids::{CallId, ParticipantId};
use crate::model::{FrameState, LedgerData, ParticipantState, ProcessRecord};

use super::failure::{Failure, Takeover, fail};

/// What abandonment was judged on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Roster {
    participants: Vec<(ParticipantId, u64, ParticipantState, Timestamp)>,
    frames: Vec<(ParticipantId, CallId, Timestamp)>,
    last_heartbeat: Timestamp,
}

impl Roster {
    pub fn of(data: &LedgerData) -> Self {
        Self {
            participants: data
                .participants
                .iter()
                .map(|(id, p)| (id.clone(), p.epoch, p.state, p.last_heartbeat))
                .collect(),
            frames: data
                .call_frames
                .iter()
                .map(|f| {
                    (
                        f.participant_id.clone(),
                        f.call_id.clone(),
                        f.last_heartbeat,
                    )
                })
                .collect(),
            last_heartbeat: data.last_heartbeat,
        }
    }
}

/// What taking an abandoned operation over found.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TakenOver {
    /// Participants (and owners of frames outside the registry) found dead.
    pub dead: Vec<ParticipantId>,
    /// Workers recorded in its frames.
    pub workers: Vec<ProcessRecord>,
}

/// Take the abandoned operation over as `me`; `None` (and no change) when it changed
/// since it was judged on `judged`.
pub(crate) fn take_over(
    data: &mut LedgerData,
    judged: &Roster,
    me: &ParticipantId,
    now: Timestamp,
) -> Option<TakenOver> {
    if Roster::of(data) != *judged {
        return None;
    }
    let mut dead = Vec::new();
    for (id, p) in data.participants.iter_mut() {
        if p.state == ParticipantState::Active {
            p.state = ParticipantState::Crashed;
            dead.push(id.clone());
        }
    }
    for f in data.call_frames.iter_mut() {
        f.state = FrameState::Crashed;
        if !data.participants.contains_key(&f.participant_id) && !dead.contains(&f.participant_id) {
            dead.push(f.participant_id.clone());
        }
    }
    let workers = data
        .call_frames
        .iter()
        .filter_map(|f| f.process.clone())
        .collect();
    fail(
        data,
        now,
        Failure {
            reason: "recovered: all participants dead".into(),
            crashed_calls: Vec::new(),
            crashed_participants: dead.clone(),
            by: me.clone(),
            takeover: Takeover::Always,
        },
    );
    Some(TakenOver { dead, workers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::core::cleanup::remove;
    use crate::ledger::core::fixtures::*;
    use crate::model::{LedgerData, OperationState};

    #[test]
    fn an_abandoned_operation_is_failed_with_the_recoverer_coordinating() {
        let mut data = operation("init", &["b"]);
        let mut f = frame("b", "b1", false);
        f.process = Some(worker(77));
        data.call_frames.push(f);
        data.temp_resources.push(temp("/t/b", Some("b")));
        let judged = Roster::of(&data);
        let taken = take_over(&mut data, &judged, &pid("rec"), at(30)).expect("unchanged");
        assert_eq!(taken.dead, vec![pid("b"), pid("init")]);
        assert_eq!(taken.workers, vec![worker(77)]);
        assert_eq!(data.operation_state, OperationState::Cleanup);
        assert_eq!(data.detection_timestamp, Some(at(30)));
        let record = data.failure.as_ref().unwrap();
        assert_eq!(record.reason, "recovered: all participants dead");
        assert_eq!(record.coordinator, Some(pid("rec")));
        assert!(
            data.participants
                .values()
                .all(|p| p.state == ParticipantState::Crashed)
        );
        assert_eq!(data.call_frames[0].state, FrameState::Crashed);
        let swept = remove(&mut data, &here(), at(31));
        assert_eq!(swept.delete, ["/t/b"]);
        assert_eq!(data.operation_state, OperationState::Failed);
    }

    #[test]
    fn a_change_since_the_judgement_is_judged_again() {
        let mut data = operation("init", &["b"]);
        let judged = Roster::of(&data);
        data.participants.get_mut(&pid("b")).unwrap().last_heartbeat = at(40);
        let before = data.clone();
        assert_eq!(take_over(&mut data, &judged, &pid("rec"), at(41)), None);
        assert_eq!(data, before);
        let mut joined = operation("init", &["b", "c"]);
        assert_eq!(take_over(&mut joined, &judged, &pid("rec"), at(41)), None);
    }

    #[test]
    fn a_failing_operation_whose_coordinator_died_is_taken_over() {
        let mut data = operation("init", &["b"]);
        fail(&mut data, at(2), Failure::new("boom", &pid("b")));
        let judged = Roster::of(&data);
        take_over(&mut data, &judged, &pid("rec"), at(30)).expect("unchanged");
        let record = data.failure.as_ref().unwrap();
        assert_eq!(record.reason, "boom", "the first reason stays");
        assert_eq!(record.coordinator, Some(pid("rec")));
        assert_eq!(data.detection_timestamp, Some(at(2)));
    }

    #[test]
    fn an_original_format_operation_is_recovered_from_its_frames() {
        let text = r#"{
            "operationId": "op-orig",
            "operationState": "running",
            "lastHeartbeat": "2023-01-01T10:00:00",
            "stack": [{"participantId": "w1", "callId": "c1", "pid": 5,
                       "startTime": "2023-01-01T10:00:00"}],
            "tempResources": [{"path": "/t/orig", "owner": 5,
                               "registeredAt": "2023-01-01T10:00:00"}]
        }"#;
        let mut data = LedgerData::from_json(text.as_bytes()).expect("original format");
        let judged = Roster::of(&data);
        let taken = take_over(&mut data, &judged, &pid("rec"), at(30)).expect("unchanged");
        assert_eq!(taken.dead, vec![pid("w1")]);
        assert!(taken.workers.is_empty());
        assert_eq!(
            data.failure.as_ref().unwrap().crashed_participants,
            vec![pid("w1")]
        );
        let swept = remove(&mut data, &here(), at(31));
        assert_eq!(swept.delete, ["/t/orig"], "no owners recorded: handed over");
        assert_eq!(data.operation_state, OperationState::Failed);
        assert!(data.call_frames.is_empty());
    }
}
