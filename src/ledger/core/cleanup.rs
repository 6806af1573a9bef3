//! The coordinator's decisions during a failure cleanup.
//!
//! The coordinator waits (bounded, by the edge) while a live participant has frames it
//! has not cleaned up, then stops the workers recorded by dead participants, and finally
//! removes what is left: this host's temp resources, all frames; the operation is then
//! `failed` with its `removalTimestamp`, and archived. Liveness is a fact passed in.

use crate::clock::Timestamp;
use crate::ids::ParticipantId;
use crate::model::{FrameState, LedgerData, LogLevel, OperationState, ProcessRecord};

use super::{Effect, Here, Live, temps};

/// Whether the coordinator `me` still waits for a participant's own cleanup: a frame not
/// cleaned up (nor crashed) whose owner is `me` or alive.
pub(crate) fn waiting(data: &LedgerData, me: &ParticipantId, live: &Live) -> bool {
    data.call_frames.iter().any(|f| {
        f.state != FrameState::CleanedUp
            && f.state != FrameState::Crashed
            && (&f.participant_id == me || live.contains(&f.participant_id))
    })
}

/// Workers recorded by crashed or dead participants (nobody else will stop them), never
/// in `own_group`: a participant started inside a dead one's worker (a nested `exec`)
/// lives in that worker's group.
pub(crate) fn orphaned_workers(
    data: &LedgerData,
    me: &ParticipantId,
    live: &Live,
    own_group: i32,
) -> Vec<ProcessRecord> {
    data.call_frames
        .iter()
        .filter(|f| &f.participant_id != me)
        .filter(|f| f.state == FrameState::Crashed || !live.contains(&f.participant_id))
        .filter_map(|f| f.process.clone())
        .filter(|p| p.pgid != own_group)
        .collect()
}

/// Whether `me` finishes the cleanup itself (after an interruption): it coordinates, or
/// nobody does, or the coordinator is no longer alive.
pub(crate) fn takes_over(data: &LedgerData, me: &ParticipantId, live: &Live) -> bool {
    data.failure
        .as_ref()
        .and_then(|f| f.coordinator.as_ref())
        .is_none_or(|c| c == me || !live.contains(c))
}

/// The removal: this host's temp resources leave the ledger to be deleted, every frame
/// goes, and the operation is failed at `now`. Returns the temp paths to delete and what
/// was left recorded (paths of other hosts or users).
pub(crate) fn remove(data: &mut LedgerData, here: &Here, now: Timestamp) -> temps::Swept {
    let swept = temps::sweep(data, None, here);
    data.call_frames.clear();
    data.operation_state = OperationState::Failed;
    data.removal_timestamp = Some(now);
    swept
}

/// What the coordinator does once [`remove`] is written.
pub(crate) fn after_removal(swept: temps::Swept, me: &ParticipantId) -> Vec<Effect> {
    vec![
        Effect::DeleteTemps(swept.delete),
        Effect::Log(
            LogLevel::Info,
            format!("CLEANUP_COMPLETED coordinator={me}"),
        ),
        Effect::Archive,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::core::fixtures::*;

    fn live(ids: &[&str]) -> Live {
        Live(ids.iter().map(|s| pid(s)).collect())
    }

    #[test]
    fn the_coordinator_waits_for_live_participants_own_cleanup_only() {
        let mut data = operation("init", &["me", "b", "dead"]);
        data.call_frames.push(frame("dead", "d1", true));
        assert!(
            !waiting(&data, &pid("me"), &live(&["b"])),
            "dead owners are not waited for"
        );
        data.call_frames.push(frame("b", "b1", true));
        assert!(waiting(&data, &pid("me"), &live(&["b"])));
        data.call_frames[1].state = FrameState::CleanedUp;
        assert!(!waiting(&data, &pid("me"), &live(&["b"])));
        data.call_frames.push(frame("me", "m1", true));
        assert!(
            waiting(&data, &pid("me"), &live(&[])),
            "its own frames count"
        );
        data.call_frames[2].state = FrameState::Crashed;
        assert!(!waiting(&data, &pid("me"), &live(&[])));
    }

    #[test]
    fn workers_of_dead_or_crashed_owners_are_stopped_never_its_own_group() {
        let mut data = operation("init", &["me", "b", "c"]);
        let with = |owner: &str, id: &str, w: i32| {
            let mut f = frame(owner, id, true);
            f.process = Some(worker(w));
            f
        };
        data.call_frames.push(with("me", "m", 10));
        data.call_frames.push(with("b", "b", 20));
        data.call_frames.push(with("c", "c", 30));
        data.call_frames.push(with("gone", "g", 40));
        data.call_frames.push(with("gone", "own", 50));
        data.call_frames[2].state = FrameState::Crashed;
        let stop = orphaned_workers(&data, &pid("me"), &live(&["b", "c"]), 50);
        let pids: Vec<i32> = stop.iter().map(|w| w.pid).collect();
        assert_eq!(pids, [30, 40]);
    }

    #[test]
    fn a_dead_coordinator_is_taken_over() {
        let mut data = operation("init", &["me", "coord"]);
        assert!(
            takes_over(&data, &pid("me"), &live(&[])),
            "nobody coordinates"
        );
        data.failure = Some(crate::model::FailureRecord {
            reason: "x".into(),
            crashed_call_ids: Vec::new(),
            crashed_participants: Vec::new(),
            coordinator: Some(pid("coord")),
        });
        assert!(!takes_over(&data, &pid("me"), &live(&["coord"])));
        assert!(
            takes_over(&data, &pid("me"), &live(&[])),
            "the coordinator died"
        );
        assert!(takes_over(&data, &pid("coord"), &live(&["coord"])));
    }

    #[test]
    fn the_removal_fails_the_operation_and_keeps_other_hosts_paths() {
        let mut data = operation("init", &["me", "remote"]);
        data.operation_state = OperationState::Cleanup;
        data.participants.get_mut(&pid("remote")).unwrap().host = "there".into();
        data.call_frames.push(frame("me", "m", true));
        data.temp_resources.push(temp("/t/mine", Some("me")));
        data.temp_resources.push(temp("/t/theirs", Some("remote")));
        let swept = remove(&mut data, &here(), at(9));
        assert_eq!(swept.delete, ["/t/mine"]);
        assert_eq!(data.operation_state, OperationState::Failed);
        assert_eq!(data.removal_timestamp, Some(at(9)));
        assert!(data.call_frames.is_empty());
        assert_eq!(data.temp_resources.len(), 1);
        let effects = after_removal(swept, &pid("me"));
        assert_eq!(effects[0], Effect::DeleteTemps(vec!["/t/mine".into()]));
        assert_eq!(effects[2], Effect::Archive);
    }
}
