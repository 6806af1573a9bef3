//! The one place that decides an operation fails.
//!
//! A running operation fails by entering `cleanup` with a [`FailureRecord`] naming who
//! coordinates the cleanup. Whatever fails it (a call with `fail_on_crash`, a crash
//! declaration, an interruption, recovery) goes through [`fail`]. Once failing, a later
//! cause only adds to the record, and takes the coordination over only as its
//! [`Takeover`] allows (the coordinator died, or recovery found everyone dead).

use crate::clock::Timestamp;
use crate::ids::{CallId, ParticipantId};
use crate::model::{FailureRecord, LedgerData, OperationState};

/// When a cause arriving during a running cleanup makes its reporter the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Takeover {
    /// Never: the cleanup is under way, this cause is not recorded.
    Never,
    /// When this (dead) participant was the coordinator, or nobody was.
    FromDead(ParticipantId),
    /// Always (recovery: every participant is dead).
    Always,
}

/// Why the operation fails, and who says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub reason: String,
    pub crashed_calls: Vec<CallId>,
    pub crashed_participants: Vec<ParticipantId>,
    /// The reporter, who coordinates if it starts (or takes over) the cleanup.
    pub by: ParticipantId,
    pub takeover: Takeover,
}

impl Failure {
    /// A failure with only a reason (a call failed, a participant was interrupted).
    pub fn new(reason: impl Into<String>, by: &ParticipantId) -> Self {
        Self {
            reason: reason.into(),
            crashed_calls: Vec::new(),
            crashed_participants: Vec::new(),
            by: by.clone(),
            takeover: Takeover::Never,
        }
    }
}

/// What [`fail`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failing {
    /// The operation was running and now fails; the reporter coordinates.
    Started,
    /// It was already failing; the reporter took the coordination over.
    TookOver,
    /// It was already failing; the cause was added to the record.
    Added,
    /// Nothing changed (already failing and no takeover, or ended).
    Unchanged,
}

impl Failing {
    /// Whether the reporter now coordinates the cleanup.
    pub fn coordinates(self) -> bool {
        matches!(self, Failing::Started | Failing::TookOver)
    }
}

/// Fail the operation (see the module notes).
pub(crate) fn fail(data: &mut LedgerData, now: Timestamp, failure: Failure) -> Failing {
    match data.operation_state {
        OperationState::Running => {
            data.operation_state = OperationState::Cleanup;
            data.detection_timestamp = Some(now);
            data.failure = Some(FailureRecord {
                reason: failure.reason,
                crashed_call_ids: failure.crashed_calls,
                crashed_participants: failure.crashed_participants,
                coordinator: Some(failure.by),
            });
            Failing::Started
        }
        OperationState::Cleanup if failure.takeover != Takeover::Never => {
            data.detection_timestamp.get_or_insert(now);
            let record = data.failure.get_or_insert_with(|| FailureRecord {
                reason: failure.reason.clone(),
                crashed_call_ids: Vec::new(),
                crashed_participants: Vec::new(),
                coordinator: None,
            });
            record
                .crashed_participants
                .extend(failure.crashed_participants);
            record.crashed_call_ids.extend(failure.crashed_calls);
            let takes_over = match &failure.takeover {
                Takeover::Always => true,
                Takeover::FromDead(dead) => record.coordinator.as_ref().is_none_or(|c| c == dead),
                Takeover::Never => false,
            };
            if takes_over {
                record.coordinator = Some(failure.by);
                Failing::TookOver
            } else {
                Failing::Added
            }
        }
        _ => Failing::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::core::fixtures::*;

    #[test]
    fn a_running_operation_fails_with_the_reporter_as_coordinator() {
        let mut data = operation("init", &["b"]);
        let mut f = Failure::new("call `c` failed: boom", &pid("b"));
        f.crashed_calls = vec![call("c")];
        assert_eq!(fail(&mut data, at(5), f), Failing::Started);
        assert_eq!(data.operation_state, OperationState::Cleanup);
        assert_eq!(data.detection_timestamp, Some(at(5)));
        let record = data.failure.as_ref().expect("recorded");
        assert_eq!(record.reason, "call `c` failed: boom");
        assert_eq!(record.crashed_call_ids, vec![call("c")]);
        assert_eq!(record.coordinator, Some(pid("b")));
    }

    #[test]
    fn a_second_failure_changes_nothing_without_a_takeover() {
        let mut data = operation("init", &["b"]);
        fail(&mut data, at(5), Failure::new("first", &pid("init")));
        let before = data.clone();
        let second = fail(&mut data, at(9), Failure::new("second", &pid("b")));
        assert_eq!(second, Failing::Unchanged);
        assert!(!second.coordinates());
        assert_eq!(data, before);
    }

    #[test]
    fn the_coordinator_dying_hands_the_cleanup_to_its_detector() {
        let mut data = operation("init", &["b", "c"]);
        fail(&mut data, at(5), Failure::new("first", &pid("b")));
        let mut crash = Failure::new("participant `c` crashed", &pid("init"));
        crash.crashed_participants = vec![pid("c")];
        crash.takeover = Takeover::FromDead(pid("c"));
        assert_eq!(fail(&mut data, at(6), crash), Failing::Added);
        assert_eq!(data.failure.as_ref().unwrap().coordinator, Some(pid("b")));
        let mut crash = Failure::new("participant `b` crashed", &pid("init"));
        crash.crashed_participants = vec![pid("b")];
        crash.takeover = Takeover::FromDead(pid("b"));
        assert_eq!(fail(&mut data, at(7), crash), Failing::TookOver);
        let record = data.failure.as_ref().unwrap();
        assert_eq!(record.coordinator, Some(pid("init")));
        assert_eq!(record.crashed_participants, vec![pid("c"), pid("b")]);
        assert_eq!(record.reason, "first", "the first reason stays");
        assert_eq!(data.detection_timestamp, Some(at(5)));
    }

    #[test]
    fn an_ended_operation_never_fails() {
        for state in [OperationState::Completed, OperationState::Failed] {
            let mut data = operation("init", &[]);
            data.operation_state = state;
            let mut f = Failure::new("late", &pid("init"));
            f.takeover = Takeover::Always;
            assert_eq!(fail(&mut data, at(1), f), Failing::Unchanged);
            assert_eq!(data.operation_state, state);
            assert!(data.failure.is_none());
        }
    }

    #[test]
    fn a_cleanup_without_record_gets_one_on_takeover() {
        let mut data = operation("init", &[]);
        data.operation_state = OperationState::Cleanup;
        let mut f = Failure::new("recovered", &pid("r"));
        f.takeover = Takeover::Always;
        assert_eq!(fail(&mut data, at(3), f), Failing::TookOver);
        assert_eq!(data.failure.as_ref().unwrap().reason, "recovered");
        assert_eq!(data.detection_timestamp, Some(at(3)));
    }
}
