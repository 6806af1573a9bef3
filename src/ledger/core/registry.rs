//! The participant registry: registering (create, join) with epochs, the fencing check
//! every write of a participant passes, leaving in order, completing, aborting, pausing.
//!
//! Epochs fence: each registration gets the next epoch, and a write carrying an epoch the
//! registry no longer holds (re-registered, or declared crashed) is refused as `Fenced`.
//! Participants that leave in order are dropped from the registry (counted and kept in a
//! short history), unless the registry must keep them: see `model::participants`.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId, ParticipantId};
use crate::model::{
    LEFT_HISTORY, LedgerData, LeftParticipant, OperationState, Participant, ParticipantState,
};

use super::join_ids;

/// Refuse any change of an operation that has ended.
pub(crate) fn refuse_ended(data: &LedgerData) -> Result<()> {
    if data.operation_state.is_final() {
        return Err(Error::OperationEnded {
            operation: data.operation_id.clone(),
            state: data.operation_state.to_string(),
        });
    }
    Ok(())
}

/// Register the initiator of a fresh operation at epoch 1.
pub(crate) fn register_initiator(data: &mut LedgerData, mut registration: Participant) {
    registration.epoch = 1;
    data.participants
        .insert(data.initiator_id.clone(), registration);
    data.next_epoch = 2;
}

/// What is known about the live process holding the id being joined under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Not judged yet.
    #[default]
    Unknown,
    /// The registration at this pid and epoch was judged alive or dead.
    Judged { pid: i32, epoch: u64, alive: bool },
}

/// The outcome of [`join`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Joining {
    /// Registered at `epoch`.
    Joined { epoch: u64, initiator: bool },
    /// A different process holds the id: judge whether it lives and join again with the
    /// verdict. Nothing was changed.
    Judge(Participant),
}

/// Register `registration` under `me`, at the next epoch. Refused when the operation has
/// ended, and when a different process that is alive (as `holder` says) holds the id.
pub(crate) fn join(
    data: &mut LedgerData,
    me: &ParticipantId,
    registration: &Participant,
    holder: &Holder,
    now: Timestamp,
) -> Result<Joining> {
    refuse_ended(data)?;
    if let Some(existing) = data.participants.get(me)
        && existing.state == ParticipantState::Active
        && existing.pid != registration.pid
    {
        match holder {
            Holder::Judged { pid, epoch, alive }
                if *pid == existing.pid && *epoch == existing.epoch =>
            {
                if *alive {
                    return Err(Error::ParticipantInUse {
                        operation: data.operation_id.clone(),
                        participant: me.clone(),
                        pid: existing.pid,
                    });
                }
            }
            _ => return Ok(Joining::Judge(existing.clone())),
        }
    }
    let epoch = data.next_epoch.max(1);
    data.next_epoch = epoch + 1;
    let mut record = registration.clone();
    record.epoch = epoch;
    data.participants.insert(me.clone(), record);
    data.last_heartbeat = now;
    Ok(Joining::Joined {
        epoch,
        initiator: data.initiator_id == *me,
    })
}

/// The fencing check every write of a participant passes: refused once the operation
/// ended, and as `Fenced` when `me` is not registered at `epoch` or was declared crashed.
/// An admitted write counts as a heartbeat of `me`.
pub(crate) fn admit_writer(
    data: &mut LedgerData,
    op: &OperationId,
    me: &ParticipantId,
    epoch: u64,
    now: Timestamp,
) -> Result<()> {
    refuse_ended(data)?;
    let fenced = || Error::Fenced {
        operation: op.clone(),
        participant: me.clone(),
        epoch,
    };
    let record = data.participants.get_mut(me).ok_or_else(fenced)?;
    if record.epoch != epoch || record.state == ParticipantState::Crashed {
        return Err(fenced());
    }
    record.last_heartbeat = now;
    data.last_heartbeat = now;
    Ok(())
}

/// `id` leaves in order: dropped from the registry (counted and kept in the short
/// history) unless it must stay (it is the initiator, or owns frames or temp resources),
/// in which case it stays marked `left`.
pub(crate) fn leave(data: &mut LedgerData, id: &ParticipantId, now: Timestamp) {
    let owns_something = data.call_frames.iter().any(|f| &f.participant_id == id)
        || data
            .temp_resources
            .iter()
            .any(|t| t.owner_id.as_ref() == Some(id));
    if owns_something || &data.initiator_id == id {
        if let Some(p) = data.participants.get_mut(id) {
            p.state = ParticipantState::Left;
        }
        return;
    }
    let Some(p) = data.participants.remove(id) else {
        return;
    };
    data.participants_left += 1;
    data.recently_left.push(LeftParticipant {
        id: id.clone(),
        pid: p.pid,
        joined_at: p.joined_at,
        left_at: now,
    });
    let excess = data.recently_left.len().saturating_sub(LEFT_HISTORY);
    data.recently_left.drain(..excess);
}

/// Complete the operation as `me` (the initiator): refused while calls of `me` still run
/// (`own_running`, from its own bookkeeping), and while others hold frames unless `force`.
pub(crate) fn complete(
    data: &mut LedgerData,
    me: &ParticipantId,
    own_running: &[CallId],
    force: bool,
) -> Result<()> {
    if !own_running.is_empty() {
        return Err(Error::RunningCalls {
            operation: data.operation_id.clone(),
            calls: join_ids(own_running),
        });
    }
    let others: Vec<CallId> = data
        .call_frames
        .iter()
        .filter(|f| &f.participant_id != me)
        .map(|f| f.call_id.clone())
        .collect();
    if !others.is_empty() && !force {
        return Err(Error::OpenCalls {
            operation: data.operation_id.clone(),
            calls: join_ids(&others),
        });
    }
    data.operation_state = OperationState::Completed;
    if let Some(p) = data.participants.get_mut(me) {
        p.state = ParticipantState::Left;
    }
    Ok(())
}

/// Set the abort flag from outside the operation (no registration): refused once ended.
pub(crate) fn abort_from_outside(data: &mut LedgerData, now: Timestamp) -> Result<()> {
    refuse_ended(data)?;
    data.aborted = true;
    data.last_heartbeat = now;
    Ok(())
}

/// Record (`true`) or clear `me`'s pause (job control).
pub(crate) fn record_pause(
    data: &mut LedgerData,
    me: &ParticipantId,
    paused: bool,
    now: Timestamp,
) {
    if let Some(p) = data.participants.get_mut(me) {
        p.paused_at = paused.then_some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::core::fixtures::*;

    #[test]
    fn joins_get_increasing_epochs_and_the_initiator_is_recognised() {
        let mut data = operation("init", &[]);
        let j = join(
            &mut data,
            &pid("b"),
            &participant(200, 0),
            &Holder::Unknown,
            at(3),
        );
        assert_eq!(
            j.unwrap(),
            Joining::Joined {
                epoch: 2,
                initiator: false
            }
        );
        assert_eq!(data.participants[&pid("b")].epoch, 2);
        assert_eq!(data.last_heartbeat, at(3));
        // The initiator re-joining under its own pid gets a new epoch.
        let j = join(
            &mut data,
            &pid("init"),
            &participant(100, 0),
            &Holder::Unknown,
            at(4),
        );
        assert_eq!(
            j.unwrap(),
            Joining::Joined {
                epoch: 3,
                initiator: true
            }
        );
        assert_eq!(data.next_epoch, 4);
    }

    #[test]
    fn an_original_operation_without_epochs_starts_at_one() {
        let mut data = operation("init", &[]);
        data.participants.clear();
        data.next_epoch = 0;
        let j = join(
            &mut data,
            &pid("b"),
            &participant(5, 0),
            &Holder::Unknown,
            at(1),
        );
        assert_eq!(
            j.unwrap(),
            Joining::Joined {
                epoch: 1,
                initiator: false
            }
        );
    }

    #[test]
    fn a_join_under_an_id_another_live_process_holds_is_refused() {
        let mut data = operation("init", &["b"]);
        let holder = data.participants[&pid("b")].clone();
        let before = data.clone();
        // Not judged yet: asks for the verdict and changes nothing.
        let j = join(
            &mut data,
            &pid("b"),
            &participant(999, 0),
            &Holder::Unknown,
            at(1),
        );
        assert_eq!(j.unwrap(), Joining::Judge(holder.clone()));
        assert_eq!(data, before);
        let alive = Holder::Judged {
            pid: holder.pid,
            epoch: holder.epoch,
            alive: true,
        };
        let j = join(&mut data, &pid("b"), &participant(999, 0), &alive, at(1));
        assert!(
            matches!(j, Err(Error::ParticipantInUse { pid: 101, .. })),
            "{j:?}"
        );
        assert_eq!(data, before);
        // A verdict about another registration is no verdict.
        let stale = Holder::Judged {
            pid: holder.pid,
            epoch: 99,
            alive: false,
        };
        let j = join(&mut data, &pid("b"), &participant(999, 0), &stale, at(1));
        assert!(matches!(j, Ok(Joining::Judge(_))));
        let dead = Holder::Judged {
            pid: holder.pid,
            epoch: holder.epoch,
            alive: false,
        };
        let j = join(&mut data, &pid("b"), &participant(999, 0), &dead, at(1));
        assert_eq!(
            j.unwrap(),
            Joining::Joined {
                epoch: 3,
                initiator: false
            }
        );
        assert_eq!(data.participants[&pid("b")].pid, 999);
    }

    #[test]
    fn a_crashed_or_left_holder_needs_no_verdict() {
        for state in [ParticipantState::Crashed, ParticipantState::Left] {
            let mut data = operation("init", &["b"]);
            data.participants.get_mut(&pid("b")).unwrap().state = state;
            let j = join(
                &mut data,
                &pid("b"),
                &participant(999, 0),
                &Holder::Unknown,
                at(1),
            );
            assert!(
                matches!(j, Ok(Joining::Joined { epoch: 3, .. })),
                "{state:?}"
            );
        }
    }

    #[test]
    fn an_ended_operation_refuses_joins_and_writes() {
        let mut data = operation("init", &["b"]);
        data.operation_state = OperationState::Completed;
        let j = join(
            &mut data,
            &pid("c"),
            &participant(5, 0),
            &Holder::Unknown,
            at(1),
        );
        assert!(matches!(j, Err(Error::OperationEnded { .. })));
        let op = data.operation_id.clone();
        let w = admit_writer(&mut data, &op, &pid("b"), 2, at(1));
        assert!(matches!(w, Err(Error::OperationEnded { .. })));
        assert!(matches!(
            abort_from_outside(&mut data, at(1)),
            Err(Error::OperationEnded { .. })
        ));
        assert!(!data.aborted);
    }

    #[test]
    fn a_fenced_writer_is_refused_and_a_current_one_beats() {
        let mut data = operation("init", &["b"]);
        let op = data.operation_id.clone();
        admit_writer(&mut data, &op, &pid("b"), 2, at(8)).expect("current epoch");
        assert_eq!(data.participants[&pid("b")].last_heartbeat, at(8));
        assert_eq!(data.last_heartbeat, at(8));
        // A stale epoch (the id re-registered since).
        let before = data.clone();
        let w = admit_writer(&mut data, &op, &pid("b"), 1, at(9));
        assert!(matches!(w, Err(Error::Fenced { epoch: 1, .. })), "{w:?}");
        assert_eq!(data, before);
        // Declared crashed.
        data.participants.get_mut(&pid("b")).unwrap().state = ParticipantState::Crashed;
        assert!(matches!(
            admit_writer(&mut data, &op, &pid("b"), 2, at(9)),
            Err(Error::Fenced { .. })
        ));
        // Not registered (dropped after leaving, or never joined).
        assert!(matches!(
            admit_writer(&mut data, &op, &pid("zz"), 2, at(9)),
            Err(Error::Fenced { .. })
        ));
    }

    #[test]
    fn leaving_in_order_drops_the_participant_and_keeps_a_short_history() {
        let mut data = operation("init", &[]);
        for n in 0..40 {
            let who = pid(&format!("exec-{n}"));
            data.participants
                .insert(who.clone(), participant(100 + n, 2));
            leave(&mut data, &who, at(n as i64));
        }
        assert_eq!(data.participants.len(), 1, "only the initiator stays");
        assert_eq!(data.participants_left, 40);
        assert_eq!(data.recently_left.len(), LEFT_HISTORY);
        let last = data.recently_left.last().unwrap();
        assert_eq!(
            (last.id.clone(), last.pid, last.left_at),
            (pid("exec-39"), 139, at(39))
        );
        // Leaving twice changes nothing more.
        leave(&mut data, &pid("exec-39"), at(50));
        assert_eq!(data.participants_left, 40);
    }

    #[test]
    fn a_participant_that_leaves_something_behind_stays_registered() {
        let mut data = operation("init", &["owner", "caller"]);
        data.temp_resources.push(temp("/tmp/x", Some("owner")));
        data.call_frames.push(frame("caller", "c1", true));
        for who in ["owner", "caller", "init"] {
            leave(&mut data, &pid(who), at(1));
            assert_eq!(
                data.participants[&pid(who)].state,
                ParticipantState::Left,
                "{who}"
            );
        }
        assert_eq!(data.participants_left, 0);
    }

    #[test]
    fn complete_refuses_running_calls_and_others_frames_unless_forced() {
        let mut data = operation("init", &["b"]);
        let r = complete(&mut data, &pid("init"), &[call("mine")], false);
        assert!(matches!(r, Err(Error::RunningCalls { ref calls, .. }) if calls == "mine"));
        data.call_frames.push(frame("b", "theirs", true));
        let before = data.clone();
        let r = complete(&mut data, &pid("init"), &[], false);
        assert!(matches!(r, Err(Error::OpenCalls { ref calls, .. }) if calls == "theirs"));
        assert_eq!(data, before);
        complete(&mut data, &pid("init"), &[], true).expect("forced");
        assert_eq!(data.operation_state, OperationState::Completed);
        assert_eq!(
            data.participants[&pid("init")].state,
            ParticipantState::Left
        );
    }

    #[test]
    fn pauses_are_recorded_and_cleared() {
        let mut data = operation("init", &[]);
        record_pause(&mut data, &pid("init"), true, at(4));
        assert_eq!(data.participants[&pid("init")].paused_at, Some(at(4)));
        record_pause(&mut data, &pid("init"), false, at(5));
        assert_eq!(data.participants[&pid("init")].paused_at, None);
        let mut fresh = operation("init", &[]);
        abort_from_outside(&mut fresh, at(2)).expect("running");
        assert!(fresh.aborted);
    }

    #[test]
    fn the_initiator_registers_at_epoch_one() {
        let mut data = LedgerData::new(OperationId::parse("op").unwrap(), pid("init"), at(0));
        register_initiator(&mut data, participant(100, 0));
        assert_eq!(data.participants[&pid("init")].epoch, 1);
        assert_eq!(data.next_epoch, 2);
    }
}
