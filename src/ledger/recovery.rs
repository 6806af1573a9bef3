//! Recovery of operations whose participants are all dead (a supervisor SIGKILLed, a
//! machine rebooted): their recorded workers are stopped (identity verified), their temp
//! resources deleted, and the operation archived as failed. `tom-ledger recover` runs it,
//! and so does the next supervisor that opens the ledger.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{
    FailureRecord, FrameState, LedgerData, OperationState, ParticipantState, ProcessRecord,
};

use super::Ledger;
use super::crash::stop_workers;
use super::failure::remove_path;
use super::liveness;

/// What recovery did to one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub operation_id: OperationId,
    /// Participants found dead.
    pub dead_participants: Vec<ParticipantId>,
    /// Worker process groups that were still running and were stopped.
    pub stopped_workers: usize,
    pub deleted_temp_resources: Vec<String>,
    /// Where the operation was archived.
    pub archive: String,
}

/// What `recover` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub recovered: Vec<Recovered>,
    /// Operations that could not be read or recovered, with the reason.
    pub skipped: Vec<(OperationId, String)>,
}

impl Ledger {
    /// Operations whose participants are all dead, without touching them.
    pub async fn abandoned_operations(&self) -> Result<Vec<OperationId>> {
        let mut out = Vec::new();
        for id in self.inner.store.list().await? {
            if let Ok(data) = self.inner.store.read(&id).await
                && self.is_abandoned(&data)
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn is_abandoned(&self, data: &LedgerData) -> bool {
        if data.operation_state.is_final() {
            // Whoever ended it archives it next: left to them while they run.
            return !data
                .participants
                .values()
                .any(|p| liveness::process_running(p, &self.inner));
        }
        let live_participant = data
            .participants
            .iter()
            .filter(|(_, p)| p.state == ParticipantState::Active)
            .any(|(id, _)| liveness::is_live(data, id, &self.inner));
        let live_frame = data
            .call_frames
            .iter()
            .filter(|f| !data.participants.contains_key(&f.participant_id))
            .any(|f| liveness::is_live(data, &f.participant_id, &self.inner));
        !live_participant && !live_frame
    }

    /// Clean up every operation whose participants are all dead.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        for id in self.inner.store.list().await? {
            match self.recover_one(&id).await {
                Ok(Some(r)) => report.recovered.push(r),
                Ok(None) => {}
                Err(Error::OperationNotFound(_)) => {}
                Err(e) => report.skipped.push((id, e.to_string())),
            }
        }
        Ok(report)
    }

    async fn recover_one(&self, id: &OperationId) -> Result<Option<Recovered>> {
        let store = &self.inner.store;
        let data = store.read(id).await?;
        if !self.is_abandoned(&data) {
            return Ok(None);
        }
        let me = self.inner.config.participant.clone();
        let host = self.inner.identity.host.clone();
        let now = self.inner.clock.now();
        let mut dead = Vec::new();
        let mut workers: Vec<ProcessRecord> = Vec::new();
        // Phase 1: fence the dead and take the cleanup over (unless someone else did).
        let marked = store
            .modify(id, &mut |data: &mut LedgerData| {
                dead.clear();
                workers.clear();
                if !self.is_abandoned(data) {
                    return Err(Error::invalid(
                        format!("operation `{id}`"),
                        "has live participants",
                    ));
                }
                for (pid, p) in data.participants.iter_mut() {
                    if p.state == ParticipantState::Active {
                        p.state = ParticipantState::Crashed;
                        dead.push(pid.clone());
                    }
                }
                for f in data.call_frames.iter_mut() {
                    f.state = FrameState::Crashed;
                    if !data.participants.contains_key(&f.participant_id)
                        && !dead.contains(&f.participant_id)
                    {
                        dead.push(f.participant_id.clone());
                    }
                }
                workers = data
                    .call_frames
                    .iter()
                    .filter_map(|f| f.process.clone())
                    .collect();
                if !data.operation_state.is_final() {
                    data.operation_state = OperationState::Cleanup;
                    data.detection_timestamp.get_or_insert(now);
                    let failure = data.failure.get_or_insert_with(|| FailureRecord {
                        reason: "recovered: all participants dead".into(),
                        crashed_call_ids: Vec::new(),
                        crashed_participants: Vec::new(),
                        coordinator: None,
                    });
                    failure.crashed_participants.extend(dead.iter().cloned());
                    failure.coordinator = Some(me.clone());
                }
                Ok(())
            })
            .await;
        let final_state = match marked {
            Ok(data) => data.operation_state,
            Err(Error::Invalid { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        for p in &dead {
            self.log_line(
                id,
                &format!("CRASH_DETECTED participant={p} reason=found dead by recovery"),
            )
            .await;
        }
        // Phase 2: stop what they left running, delete what they left behind.
        let stopped = stop_workers(&workers, Duration::from_secs(2)).await;
        let mut deleted = Vec::new();
        if !final_state.is_final() {
            store
                .modify(id, &mut |data: &mut LedgerData| {
                    deleted.clear();
                    let temps = std::mem::take(&mut data.temp_resources);
                    for t in temps {
                        let owner_host = t
                            .owner_id
                            .as_ref()
                            .and_then(|o| data.participants.get(o))
                            .map(|p| p.host.clone());
                        if owner_host.is_none_or(|h| h.is_empty() || h == host) {
                            deleted.push(t.path);
                        } else {
                            data.temp_resources.push(t);
                        }
                    }
                    data.call_frames.clear();
                    data.operation_state = OperationState::Failed;
                    data.removal_timestamp = Some(now);
                    Ok(())
                })
                .await?;
            for path in &deleted {
                remove_path(Path::new(path));
            }
            self.log_line(
                id,
                &format!(
                    "RECOVERED by={me} stoppedWorkers={stopped} deletedTempResources={}",
                    deleted.len()
                ),
            )
            .await;
        }
        let archive = store.archive(id).await?;
        if let Some(f) = &self.inner.callback.on_backup_created {
            f(&archive);
        }
        Ok(Some(Recovered {
            operation_id: id.clone(),
            dead_participants: dead,
            stopped_workers: stopped,
            deleted_temp_resources: deleted,
            archive,
        }))
    }

    async fn log_line(&self, op: &OperationId, message: &str) {
        let _ = self.inner.log(op, crate::model::LogLevel::Info, message).await;
    }
}
