//! Call frames: a call's record in the operation while it runs.
//!
//! A frame is written when a call starts (only while the operation runs), refreshed by its
//! owner's heartbeats, and removed when the call ends or fails. A failing call with
//! `fail_on_crash` then fails the operation ([`super::failure::fail`]). Frames of a dead
//! owner are marked crashed by the crash declaration ([`super::crash`]); during a failure
//! cleanup each live owner marks its own frames cleaned up ([`cleaned_up`]).

use std::path::PathBuf;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId, ParticipantId};
use crate::model::{CallFrame, FrameChange, FrameState, FrameStep, LedgerData, OperationState};

/// Write a call's frame; refused unless the operation is running.
pub(crate) fn start(data: &mut LedgerData, frame: CallFrame) -> Result<()> {
    if data.operation_state != OperationState::Running {
        return Err(Error::OperationFailed {
            operation: data.operation_id.clone(),
            reason: format!("operation is in {} state", data.operation_state),
        });
    }
    data.call_frames.push(frame);
    Ok(())
}

/// A frame change described as data, as its writer runs it: the writer is admitted
/// (fenced otherwise, see [`super::registry::admit_writer`]) and its step applied. A
/// frame of another participant is refused. Fails before it changes anything but the
/// writer's heartbeat; the caller drops the change then (the write fails as a whole).
pub(crate) fn apply(data: &mut LedgerData, op: &OperationId, change: &FrameChange) -> Result<()> {
    check_own(change)?;
    super::registry::admit_writer(data, op, &change.participant, change.epoch, change.at)?;
    step(data, &change.step)
}

/// A participant writes only its own frames.
pub(crate) fn check_own(change: &FrameChange) -> Result<()> {
    match &change.step {
        FrameStep::Open(frame) if frame.participant_id != change.participant => {
            Err(Error::invalid(
                format!(
                    "frame of `{}` written by `{}`",
                    frame.participant_id, change.participant
                ),
                "a participant writes only its own frames",
            ))
        }
        _ => Ok(()),
    }
}

/// A frame step of a writer already admitted. A frame that is there already is not
/// written twice (a retried request that had gone through).
pub(crate) fn step(data: &mut LedgerData, step: &FrameStep) -> Result<()> {
    match step {
        FrameStep::Open(frame) => {
            let there = data
                .call_frames
                .iter()
                .any(|f| f.call_id == frame.call_id && f.participant_id == frame.participant_id);
            if there && data.operation_state == OperationState::Running {
                return Ok(());
            }
            start(data, (**frame).clone())
        }
        FrameStep::Close(call) => {
            end(data, call);
            Ok(())
        }
    }
}

/// Remove a call's frame (the last one with its id); ended, failed or cancelled alike.
pub(crate) fn end(data: &mut LedgerData, call: &CallId) -> Option<CallFrame> {
    data.remove_frame(call)
}

/// A heartbeat of `me` refreshes its frames.
pub(crate) fn beat(data: &mut LedgerData, me: &ParticipantId, now: Timestamp) {
    for frame in data
        .call_frames
        .iter_mut()
        .filter(|f| &f.participant_id == me)
    {
        frame.last_heartbeat = now;
    }
}

/// `me` finished its own cleanup: its frames are cleaned up, and the temp resources it
/// deleted (given as paths) are forgotten.
pub(crate) fn cleaned_up(data: &mut LedgerData, me: &ParticipantId, deleted: &[PathBuf]) {
    data.temp_resources
        .retain(|t| t.target().map_or(true, |p| !deleted.contains(&p)));
    for frame in data
        .call_frames
        .iter_mut()
        .filter(|f| &f.participant_id == me)
    {
        frame.state = FrameState::CleanedUp;
    }
}

/// Mark `participant`'s frames crashed; returns their call ids and whether any of them
/// fails the operation on a crash.
pub(crate) fn crash(data: &mut LedgerData, participant: &ParticipantId) -> (Vec<CallId>, bool) {
    let mut calls = Vec::new();
    let mut fatal = false;
    for frame in data
        .call_frames
        .iter_mut()
        .filter(|f| &f.participant_id == participant)
    {
        frame.state = FrameState::Crashed;
        fatal |= frame.fail_on_crash;
        calls.push(frame.call_id.clone());
    }
    (calls, fatal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::core::fixtures::*;

    #[test]
    fn frames_start_only_while_running_and_end_by_id() {
        let mut data = operation("init", &[]);
        start(&mut data, frame("init", "a", true)).expect("running");
        start(&mut data, frame("init", "b", false)).expect("running");
        assert_eq!(
            end(&mut data, &call("a")).map(|f| f.call_id),
            Some(call("a"))
        );
        assert_eq!(end(&mut data, &call("a")), None, "ending twice is harmless");
        assert_eq!(data.call_frames.len(), 1);
        for state in [OperationState::Cleanup, OperationState::Failed] {
            let mut d = data.clone();
            d.operation_state = state;
            let r = start(&mut d, frame("init", "c", true));
            assert!(matches!(r, Err(Error::OperationFailed { .. })), "{state}");
            assert_eq!(d.call_frames.len(), 1);
        }
    }

    fn described(who: &str, epoch: u64, step: FrameStep) -> FrameChange {
        FrameChange {
            participant: pid(who),
            epoch,
            at: at(7),
            step,
        }
    }

    #[test]
    fn a_described_change_is_fenced_checked_and_applied_once() {
        let op = OperationId::parse("op").expect("id");
        let mut data = operation("init", &["b"]);
        let open = described("b", 2, FrameStep::Open(Box::new(frame("b", "b1", true))));
        apply(&mut data, &op, &open).expect("admitted");
        assert_eq!(data.participants[&pid("b")].last_heartbeat, at(7));
        apply(&mut data, &op, &open).expect("a retried open");
        assert_eq!(data.call_frames.len(), 1, "written once");
        let stale = described("b", 1, FrameStep::Close(call("b1")));
        let before = data.clone();
        assert!(matches!(
            apply(&mut data, &op, &stale),
            Err(Error::Fenced { epoch: 1, .. })
        ));
        assert_eq!(data, before);
        let theirs = described("b", 2, FrameStep::Open(Box::new(frame("init", "i1", true))));
        assert!(matches!(
            apply(&mut data, &op, &theirs),
            Err(Error::Invalid { .. })
        ));
        assert_eq!(data, before);
        apply(
            &mut data,
            &op,
            &described("b", 2, FrameStep::Close(call("b1"))),
        )
        .expect("close");
        assert!(data.call_frames.is_empty());
        data.operation_state = OperationState::Cleanup;
        assert!(matches!(
            apply(&mut data, &op, &open),
            Err(Error::OperationFailed { .. })
        ));
    }

    #[test]
    fn a_beat_refreshes_only_the_owners_frames() {
        let mut data = operation("init", &["b"]);
        data.call_frames.push(frame("init", "a", true));
        data.call_frames.push(frame("b", "b1", true));
        beat(&mut data, &pid("init"), at(9));
        assert_eq!(data.call_frames[0].last_heartbeat, at(9));
        assert_eq!(data.call_frames[1].last_heartbeat, at(0));
    }

    #[test]
    fn a_crash_marks_the_owners_frames_and_says_whether_one_is_fatal() {
        let mut data = operation("init", &["b"]);
        data.call_frames.push(frame("b", "contained", false));
        data.call_frames.push(frame("init", "other", true));
        assert_eq!(
            crash(&mut data, &pid("b")),
            (vec![call("contained")], false)
        );
        assert_eq!(data.call_frames[0].state, FrameState::Crashed);
        assert_eq!(data.call_frames[1].state, FrameState::Active);
        data.call_frames.push(frame("b", "fatal", true));
        assert!(crash(&mut data, &pid("b")).1);
    }

    #[test]
    fn cleaning_up_marks_own_frames_and_forgets_deleted_temps() {
        let mut data = operation("init", &["b"]);
        data.call_frames.push(frame("init", "a", true));
        data.call_frames.push(frame("b", "b1", true));
        data.temp_resources.push(temp("/t/gone", Some("init")));
        data.temp_resources.push(temp("/t/kept", Some("init")));
        cleaned_up(&mut data, &pid("init"), &[PathBuf::from("/t/gone")]);
        assert_eq!(data.call_frames[0].state, FrameState::CleanedUp);
        assert_eq!(data.call_frames[1].state, FrameState::Active);
        let left: Vec<&str> = data
            .temp_resources
            .iter()
            .map(|t| t.path.as_str())
            .collect();
        assert_eq!(left, ["/t/kept"]);
    }
}
