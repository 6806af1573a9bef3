//! The participant registry's bounds: participants that left in order are dropped from
//! `participants`, so an operation joined by thousands of short-lived processes (a
//! nested `tom-ledger exec` each) keeps a small file. What remains of them is a count
//! and a short history of the latest ones.
//!
//! Kept in the registry whatever happens: active and crashed participants (liveness and
//! fencing are judged on them), the initiator, and a participant that left frames or temp
//! resources behind (their owner's host decides who may delete them). A write from a
//! participant that is no longer registered is refused as fenced.

use serde::{Deserialize, Serialize};

use super::{LedgerData, ParticipantState};
use crate::clock::Timestamp;
use crate::ids::ParticipantId;

/// Participants that left kept in [`LedgerData::recently_left`].
pub const LEFT_HISTORY: usize = 8;

/// A participant that left in order and was dropped from the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftParticipant {
    pub id: ParticipantId,
    pub pid: i32,
    #[serde(with = "super::time")]
    pub joined_at: Timestamp,
    #[serde(with = "super::time")]
    pub left_at: Timestamp,
}

impl LedgerData {
    /// `id` leaves in order: dropped from the registry (counted and kept in the short
    /// history) unless it must stay (see the module notes), in which case it stays marked
    /// `left`.
    pub fn participant_left(&mut self, id: &ParticipantId, now: Timestamp) {
        let owns_something = self.call_frames.iter().any(|f| &f.participant_id == id)
            || self
                .temp_resources
                .iter()
                .any(|t| t.owner_id.as_ref() == Some(id));
        if owns_something || &self.initiator_id == id {
            if let Some(p) = self.participants.get_mut(id) {
                p.state = ParticipantState::Left;
            }
            return;
        }
        let Some(p) = self.participants.remove(id) else {
            return;
        };
        self.participants_left += 1;
        self.recently_left.push(LeftParticipant {
            id: id.clone(),
            pid: p.pid,
            joined_at: p.joined_at,
            left_at: now,
        });
        let excess = self.recently_left.len().saturating_sub(LEFT_HISTORY);
        self.recently_left.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OperationId;
    use crate::model::{Participant, TempResource, time};

    fn id(s: &str) -> ParticipantId {
        ParticipantId::parse(s).unwrap()
    }

    fn joined(data: &mut LedgerData, who: &str, pid: i32) {
        let now = time::now();
        data.participants.insert(
            id(who),
            Participant {
                pid,
                start_ticks: None,
                host: "h".into(),
                boot_id: None,
                pid_namespace: None,
                uid: None,
                epoch: 1,
                last_heartbeat: now,
                joined_at: now,
                state: ParticipantState::Active,
                spawned_by: None,
                paused_at: None,
            },
        );
    }

    #[test]
    fn leaving_in_order_drops_the_participant_and_keeps_a_short_history() {
        let now = time::now();
        let mut data = LedgerData::new(OperationId::parse("op").unwrap(), id("cli"), now);
        joined(&mut data, "cli", 1);
        for n in 0..40 {
            let who = format!("exec-{n}");
            joined(&mut data, &who, 100 + n);
            data.participant_left(&id(&who), now);
        }
        assert_eq!(data.participants.len(), 1, "only the initiator stays");
        assert_eq!(data.participants_left, 40);
        assert_eq!(data.recently_left.len(), LEFT_HISTORY);
        assert_eq!(data.recently_left.last().unwrap().id, id("exec-39"));
        assert_eq!(data.recently_left.last().unwrap().pid, 139);
        // The fields survive the file, and a file without them reads.
        let back = LedgerData::from_json(&data.to_json()).unwrap();
        assert_eq!(back.participants_left, 40);
        assert_eq!(back.recently_left.len(), LEFT_HISTORY);
        assert_eq!(LedgerData::from_json(&back.to_json()).unwrap(), back);
        let fresh = LedgerData::new(OperationId::parse("op").unwrap(), id("cli"), now);
        let text = String::from_utf8(fresh.to_json()).unwrap();
        assert!(!text.contains("participantsLeft") && !text.contains("recentlyLeft"));
    }

    #[test]
    fn a_participant_that_leaves_something_behind_stays_registered() {
        let now = time::now();
        let mut data = LedgerData::new(OperationId::parse("op").unwrap(), id("cli"), now);
        joined(&mut data, "cli", 1);
        joined(&mut data, "owner", 2);
        data.temp_resources.push(TempResource {
            path: "/tmp/x".into(),
            owner: 2,
            registered_at: now,
            owner_id: Some(id("owner")),
        });
        data.participant_left(&id("owner"), now);
        data.participant_left(&id("cli"), now);
        assert_eq!(
            data.participants[&id("owner")].state,
            ParticipantState::Left
        );
        assert_eq!(data.participants[&id("cli")].state, ParticipantState::Left);
        assert_eq!(data.participants_left, 0);
    }
}
