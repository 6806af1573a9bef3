//! Heartbeats of remote participants, stamped with the server's clock and kept here,
//! beside the document: a beat is a small request that rewrites nothing. Ages are
//! measured on the server's monotonic clock, so clients on machines whose clocks
//! disagree are judged alike.
//!
//! A participant of the document that has not beaten through this server (it joined
//! before a restart, say) counts from when the server started, so a participant that
//! died while the server was down expires one stale threshold after the restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::clock::{Timestamp, age_ms};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, ParticipantState};
use crate::store::remote::wire::HeartbeatAge;

/// The last beat of each participant of each operation.
#[derive(Debug)]
pub struct Beats {
    started: Instant,
    table: Mutex<HashMap<OperationId, HashMap<ParticipantId, (u64, Instant)>>>,
}

impl Default for Beats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl Beats {
    /// Stamp a beat now; true when it is the participant's first at this epoch.
    pub fn stamp(&self, op: &OperationId, participant: &ParticipantId, epoch: u64) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let beats = table.entry(op.clone()).or_default();
        let first = beats.get(participant).is_none_or(|(e, _)| *e != epoch);
        beats.insert(participant.clone(), (epoch, Instant::now()));
        first
    }

    /// The ages of the active participants of `data` at `now` (the server's clock). A
    /// `lastHeartbeat` in the document younger than the last beat counts too (a
    /// participant on the server's machine writing the ledger directory directly); one
    /// in the future, written by a clock ahead of the server's, does not.
    pub fn ages(&self, data: &LedgerData, now_wall: Timestamp) -> Vec<HeartbeatAge> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let beats = table.get(&data.operation_id);
        let now = Instant::now();
        data.participants
            .iter()
            .filter(|(_, p)| p.state == ParticipantState::Active)
            .map(|(id, p)| {
                let stamped = beats
                    .and_then(|b| b.get(id))
                    .filter(|(epoch, _)| *epoch == p.epoch)
                    .map(|(_, at)| *at);
                let since = stamped.unwrap_or(self.started);
                let beat_age =
                    u64::try_from(now.duration_since(since).as_millis()).unwrap_or(u64::MAX);
                let written_age =
                    (p.last_heartbeat <= now_wall).then(|| age_ms(now_wall, p.last_heartbeat));
                HeartbeatAge {
                    participant: id.clone(),
                    host: p.host.clone(),
                    pid: p.pid,
                    epoch: p.epoch,
                    age_ms: written_age.map_or(beat_age, |w| w.min(beat_age)),
                    beaten: stamped.is_some(),
                }
            })
            .collect()
    }

    /// Forget an operation (archived).
    pub fn forget(&self, op: &OperationId) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(op);
    }
}
