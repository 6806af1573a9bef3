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
pub const LEFT_HISTORY: usize = 16;

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
