//! Heartbeats of remote participants, stamped with the server's clock and kept here,
//! beside the document: a beat is a small request that rewrites nothing. Ages are
//! measured on the server's monotonic clock, so clients on machines whose clocks
//! disagree are judged alike.
//!
//! Every two seconds the last beats are copied into the documents (one heartbeat-only
//! write per beaten operation), so that whoever reads the ledger directory directly sees
//! remote participants alive too.
//!
//! A participant of the document that has not beaten through this server (it joined
//! before a restart, say) counts from when the server started, so a participant that
//! died while the server was down expires one stale threshold after the restart.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::{SharedClock, Timestamp, age_ms};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, ParticipantState};
use crate::store::Store;
use crate::store::remote::wire::HeartbeatAge;

/// The last beat of each participant of each operation.
#[derive(Debug)]
pub struct Beats {
    started: Instant,
    table: Mutex<HashMap<OperationId, HashMap<ParticipantId, (u64, Instant)>>>,
    /// Operations beaten in since their last copy into the document.
    unwritten: Mutex<HashSet<OperationId>>,
}

impl Default for Beats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            table: Mutex::new(HashMap::new()),
            unwritten: Mutex::new(HashSet::new()),
        }
    }
}

/// How often beats are copied into the documents they belong to.
pub const WRITE_EVERY: Duration = Duration::from_secs(2);

impl Beats {
    /// Stamp a beat now; true when it is the participant's first at this epoch.
    pub fn stamp(&self, op: &OperationId, participant: &ParticipantId, epoch: u64) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let beats = table.entry(op.clone()).or_default();
        let first = beats.get(participant).is_none_or(|(e, _)| *e != epoch);
        beats.insert(participant.clone(), (epoch, Instant::now()));
        self.unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(op.clone());
        first
    }

    /// The operations beaten in since the last call, with the time (by `now_wall`, the
    /// server's clock) of each participant's last beat at its epoch.
    fn take_unwritten(
        &self,
        now_wall: Timestamp,
    ) -> Vec<(OperationId, Vec<(ParticipantId, u64, Timestamp)>)> {
        let ops: Vec<OperationId> = self
            .unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        ops.into_iter()
            .filter_map(|op| {
                let beats = table.get(&op)?;
                let stamps = beats
                    .iter()
                    .map(|(id, (epoch, at))| {
                        let ago =
                            chrono::Duration::from_std(now.duration_since(*at)).unwrap_or_default();
                        (id.clone(), *epoch, now_wall - ago)
                    })
                    .collect();
                Some((op, stamps))
            })
            .collect()
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

/// Copy the beats into the documents every [`WRITE_EVERY`] (one heartbeat-only write per
/// beaten operation, however many participants beat how often), so readers of the
/// ledger directory itself (`tom-ledger recover` on the server's machine) see remote
/// participants alive too. Ends when `stop` turns true.
pub async fn write_through(
    beats: std::sync::Arc<Beats>,
    store: std::sync::Arc<dyn Store>,
    clock: SharedClock,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(WRITE_EVERY) => {}
        }
        for (op, stamps) in beats.take_unwritten(clock.now()) {
            let result = store
                .refresh(&op, &mut |data: &mut LedgerData| {
                    for (id, epoch, at) in &stamps {
                        if let Some(p) = data.participants.get_mut(id)
                            && p.epoch == *epoch
                            && p.state == ParticipantState::Active
                            && p.last_heartbeat < *at
                        {
                            p.last_heartbeat = *at;
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(crate::error::Error::OperationNotFound(_)) = result {
                beats.forget(&op);
            }
        }
    }
}
