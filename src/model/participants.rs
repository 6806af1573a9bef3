//! The participant registry's bounds: participants that left in order are dropped from
//! `participants`, so an operation joined by thousands of short-lived processes (a
//! nested `tom-ledger exec` each) keeps a small file. What remains of them is a count
//! and a short history of the latest ones.
//!
//! Kept in the registry whatever happens: active and crashed participants (liveness and
//! fencing are judged on them), the initiator, and a participant that left frames or temp
//! resources behind (their owner's host decides who may delete them). A write from a
//! participant that is no longer registered is refused as fenced. The transition itself
//! is `ledger::core::registry::leave`.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ids::ParticipantId;

/// Participants that left kept in [`super::LedgerData::recently_left`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OperationId;
    use crate::model::{LedgerData, time};

    #[test]
    fn the_left_count_and_history_survive_the_file_and_are_optional() {
        let now = time::now();
        let id = |s: &str| ParticipantId::parse(s).unwrap();
        let mut data = LedgerData::new(OperationId::parse("op").unwrap(), id("cli"), now);
        data.participants_left = 40;
        data.recently_left.push(LeftParticipant {
            id: id("exec-39"),
            pid: 139,
            joined_at: now,
            left_at: now,
        });
        let back = LedgerData::from_json(&data.to_json()).unwrap();
        assert_eq!(back.participants_left, 40);
        assert_eq!(back.recently_left.len(), 1);
        assert_eq!(back.recently_left[0].id, id("exec-39"));
        assert_eq!(back.recently_left[0].pid, 139);
        let fresh = LedgerData::new(OperationId::parse("op").unwrap(), id("cli"), now);
        let text = String::from_utf8(fresh.to_json()).unwrap();
        assert!(!text.contains("participantsLeft") && !text.contains("recentlyLeft"));
    }
}
