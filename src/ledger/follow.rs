//! Following an operation's log as it grows, until the operation is over: archived,
//! ended, or abandoned (its participants all dead, judged by the same liveness as crash
//! detection and recovery), so that a follower never waits forever for a supervisor
//! that was SIGKILLed.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, OperationState};
use crate::store::{ChangeStream, LogCursor, LogKind};

use super::Ledger;

/// How long an operation in a final state may take to be archived before following ends
/// anyway (its owner archives it right after ending it).
const ARCHIVE_WAIT: Duration = Duration::from_secs(5);

/// How often the follower looks again when no change notification comes (remote
/// participants are judged by heartbeat age, which no write announces).
const TICK: Duration = Duration::from_millis(100);

/// Why following a log ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowEnd {
    /// The operation was archived in this state.
    Archived(OperationState),
    /// The operation reached this final state and was not archived in time.
    Ended(OperationState),
    /// Every participant of the running operation is dead: nobody will write to it
    /// again until it is recovered.
    Abandoned {
        state: OperationState,
        participants: Vec<ParticipantId>,
    },
}

/// What [`LogFollower::next`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Followed {
    /// New text of the log (whole lines as written).
    Text(String),
    /// The operation is over and the log was read to its end.
    End(FollowEnd),
}

/// Reads an operation's log as it grows; see [`Ledger::follow_log`].
pub struct LogFollower {
    ledger: Ledger,
    op: OperationId,
    kind: LogKind,
    cursor: LogCursor,
    changes: Option<ChangeStream>,
    final_since: Option<Instant>,
    end: Option<FollowEnd>,
}

impl Ledger {
    /// Follow the log of `op` from its beginning. The follower ends once the operation
    /// is archived, has ended, or is abandoned by all its participants.
    pub fn follow_log(&self, op: &OperationId, kind: LogKind) -> LogFollower {
        LogFollower {
            ledger: self.clone(),
            op: op.clone(),
            kind,
            cursor: LogCursor::START,
            changes: self.inner.store.watch(op).ok(),
            final_since: None,
            end: None,
        }
    }
}

impl LogFollower {
    /// The next text of the log, waiting for it; once the operation is over and the log
    /// is read to its end, `Followed::End` (again on every later call).
    pub async fn next(&mut self) -> Result<Followed> {
        loop {
            if self.end.is_none() {
                self.end = self.judge().await?;
            }
            let store = &self.ledger.inner.store;
            let (text, next) = store.read_log(&self.op, self.kind, self.cursor).await?;
            self.cursor = next;
            if !text.is_empty() {
                return Ok(Followed::Text(text));
            }
            if let Some(end) = &self.end {
                return Ok(Followed::End(end.clone()));
            }
            match self.changes.as_mut() {
                Some(rx) => {
                    rx.next_within(TICK).await;
                }
                None => tokio::time::sleep(TICK).await,
            }
        }
    }

    /// Whether the operation is over, and how.
    async fn judge(&mut self) -> Result<Option<FollowEnd>> {
        let store = &self.ledger.inner.store;
        let data = match store.read(&self.op).await {
            Ok(data) => data,
            Err(Error::OperationNotFound(_)) => {
                let archived = store.read_archived(&self.op).await?;
                return Ok(Some(FollowEnd::Archived(archived.operation_state)));
            }
            Err(e) => return Err(e),
        };
        if data.operation_state.is_final() {
            let since = *self.final_since.get_or_insert_with(Instant::now);
            let owner_gone = self.ledger.is_abandoned(&data);
            if owner_gone || since.elapsed() > ARCHIVE_WAIT {
                return Ok(Some(FollowEnd::Ended(data.operation_state)));
            }
            return Ok(None);
        }
        if self.ledger.is_abandoned(&data) {
            return Ok(Some(FollowEnd::Abandoned {
                state: data.operation_state,
                participants: participants_of(&data),
            }));
        }
        Ok(None)
    }
}

/// Registered participants, then those only seen in frames (written by the original).
fn participants_of(data: &LedgerData) -> Vec<ParticipantId> {
    let mut ids: Vec<ParticipantId> = data.participants.keys().cloned().collect();
    for f in &data.call_frames {
        if !ids.contains(&f.participant_id) {
            ids.push(f.participant_id.clone());
        }
    }
    ids
}
