//! The newest version of each operation a client store has seen (answers to its own
//! reads and writes, operations pushed on event streams), so a change starts from it
//! instead of reading first: the write is still a compare-and-swap on its revision, so a
//! version that is behind costs a refused write (whose answer carries the current one),
//! never a lost update. A pushed operation is kept as the line it came in and parsed
//! when asked for, so a storm of writes costs each watcher one parse, not one per write.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::OperationId;
use crate::revision::Revision;
use crate::store::Versioned;

use super::wire::EventLine;

#[derive(Debug)]
enum Seen {
    Parsed(Versioned),
    /// An event line (`hello` / `changed`) with the operation at `revision`.
    Pushed {
        revision: Revision,
        line: Vec<u8>,
    },
}

impl Seen {
    fn revision(&self) -> Revision {
        match self {
            Seen::Parsed(v) => v.revision,
            Seen::Pushed { revision, .. } => *revision,
        }
    }
}

/// The last version seen of each operation.
#[derive(Debug, Default)]
pub struct Known {
    map: Mutex<HashMap<OperationId, Seen>>,
}

impl Known {
    fn keep(&self, op: &OperationId, seen: Seen) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(op) {
            Some(kept) if kept.revision() >= seen.revision() => {}
            Some(kept) => *kept = seen,
            None => {
                map.insert(op.clone(), seen);
            }
        }
    }

    /// Keep `seen` unless a newer version is kept already.
    pub fn offer(&self, seen: &Versioned) {
        self.keep(&seen.data.operation_id, Seen::Parsed(seen.clone()));
    }

    /// Keep an event line carrying `op` at `revision`, unless a newer version is kept.
    pub fn offer_pushed(&self, op: &OperationId, revision: Revision, line: Vec<u8>) {
        self.keep(op, Seen::Pushed { revision, line });
    }

    /// The newest version seen of `op`.
    pub fn get(&self, op: &OperationId) -> Option<Versioned> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let seen = map.get_mut(op)?;
        if let Seen::Pushed { revision, line } = seen {
            let data = match serde_json::from_slice::<EventLine>(line) {
                Ok(EventLine::Hello {
                    document: Some(data),
                    ..
                })
                | Ok(EventLine::Changed {
                    document: Some(data),
                    ..
                }) if data.operation_id == *op => *data,
                // Not an operation after all: forget it (the next change reads).
                _ => {
                    map.remove(op);
                    return None;
                }
            };
            *seen = Seen::Parsed(Versioned {
                data,
                revision: *revision,
            });
        }
        match seen {
            Seen::Parsed(v) => Some(v.clone()),
            Seen::Pushed { .. } => None,
        }
    }

    /// Forget `op` (archived or gone).
    pub fn forget(&self, op: &OperationId) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ParticipantId;
    use crate::model::LedgerData;

    fn version(op: &OperationId, revision: u64) -> Versioned {
        let mut data = LedgerData::new(
            op.clone(),
            ParticipantId::parse("cli").unwrap(),
            chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        );
        data.seq = revision;
        Versioned {
            data,
            revision: Revision::new(revision),
        }
    }

    fn line(v: &Versioned) -> Vec<u8> {
        serde_json::to_vec(&EventLine::Changed {
            revision: Some(v.revision.get()),
            document: Some(Box::new(v.data.clone())),
        })
        .unwrap()
    }

    #[test]
    fn a_pushed_line_is_parsed_when_asked_for_and_the_newest_version_wins() {
        let op = OperationId::parse("op-1").unwrap();
        let known = Known::default();
        known.offer_pushed(&op, Revision::new(3), line(&version(&op, 3)));
        // An older version changes nothing.
        known.offer(&version(&op, 2));
        known.offer_pushed(&op, Revision::new(1), line(&version(&op, 1)));
        assert_eq!(known.get(&op), Some(version(&op, 3)));
        known.offer(&version(&op, 4));
        assert_eq!(known.get(&op), Some(version(&op, 4)));
        known.forget(&op);
        assert_eq!(known.get(&op), None);
    }

    #[test]
    fn a_line_without_this_operation_is_forgotten() {
        let op = OperationId::parse("op-1").unwrap();
        let other = OperationId::parse("op-2").unwrap();
        let known = Known::default();
        known.offer_pushed(&op, Revision::new(5), line(&version(&other, 5)));
        assert_eq!(known.get(&op), None);
        known.offer_pushed(&op, Revision::new(6), b"{\"event\":\"changed\"".to_vec());
        assert_eq!(known.get(&op), None);
        // Forgotten: an older version is taken again.
        known.offer(&version(&op, 2));
        assert_eq!(known.get(&op), Some(version(&op, 2)));
    }
}
