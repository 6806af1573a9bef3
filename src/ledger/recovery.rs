//! Recovery of operations whose participants are all dead (a supervisor SIGKILLed, a
//! machine rebooted): their recorded workers are stopped (on proof only), their temp
//! resources deleted, and the operation archived as failed. `tom-ledger recover` runs it
//! explicitly; the next supervisor that opens the ledger runs it automatically, on the
//! operations proven to be its own only (see `recovery_proof.rs` for the rules).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, OperationState, TempResource};
use crate::process::{PlannedProcess, plan_recorded};

use super::Ledger;
use super::core::{
    self,
    recovery::{Roster, TakenOver},
    temps::Swept,
};
use super::crash::{recorded_group, stop_workers_reporting};
use super::recovery_proof::{RecoveryMode, here, is_abandoned, refusal};

/// Judgements of one operation before recovery gives up on it (each time, it changed
/// between the judgement and the change: someone is writing to it).
const RECOVERY_ATTEMPTS: usize = 5;

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
    /// What the record named that recovery did not touch, one line each with the reason.
    pub untouched: Vec<String>,
}

/// An abandoned operation that recovery left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftAlone {
    pub operation_id: OperationId,
    pub reason: String,
}

/// What `recover` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub recovered: Vec<Recovered>,
    /// Operations that could not be read or recovered, with the reason.
    pub skipped: Vec<(OperationId, String)>,
    /// Abandoned operations that this mode of recovery may not touch, with the reason.
    pub left_alone: Vec<LeftAlone>,
    /// Files removed that creates which failed part-way left (a full disk, say): no
    /// operation came of them.
    pub removed_leftovers: Vec<PathBuf>,
}

/// What an explicit recovery would do to one abandoned operation (`recover --dry-run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRecovery {
    pub operation_id: OperationId,
    pub state: OperationState,
    /// Registered participants (all dead); empty for the original's operations.
    pub participants: Vec<ParticipantId>,
    pub call_frames: usize,
    /// Call frames that record a worker process.
    pub recorded_workers: usize,
    pub temp_resources: usize,
    /// Paths that would be handed to the removal function.
    pub delete: Vec<String>,
    /// Processes that would be signalled now.
    pub signal: Vec<PlannedProcess>,
    /// What the record names that would not be touched, with the reason.
    pub untouched: Vec<String>,
    /// Set when `recover` would leave the whole operation alone, with the reason.
    pub left_alone: Option<String>,
    /// Whether the next `run` would recover it by itself (proven to be its own).
    pub automatic: bool,
}

impl Ledger {
    /// Operations whose participants are all dead, without touching them.
    pub async fn abandoned_operations(&self) -> Result<Vec<OperationId>> {
        let mut out = Vec::new();
        for id in self.inner.store.list().await? {
            if let Ok(data) = self.inner.store.read(&id).await
                && is_abandoned(&data, &self.inner)
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Clean up every abandoned operation whose record is ours (`tom-ledger recover`).
    pub async fn recover(&self) -> Result<RecoveryReport> {
        self.recover_in(RecoveryMode::Explicit).await
    }

    /// Whether every participant of the operation is gone (see `recovery_proof`).
    pub(crate) fn is_abandoned(&self, data: &LedgerData) -> bool {
        is_abandoned(data, &self.inner)
    }

    /// What [`recover`](Self::recover) would remove of creates that failed part-way,
    /// without removing it.
    pub async fn failed_create_leftovers(&self) -> Result<Vec<PathBuf>> {
        self.inner.store.clean_failed_creates(true).await
    }

    /// Clean up only the abandoned operations proven to come from this host, boot, PID
    /// namespace and user; the others are listed in `left_alone` (what `run` does before
    /// it starts).
    pub async fn recover_automatically(&self) -> Result<RecoveryReport> {
        self.recover_in(RecoveryMode::Automatic).await
    }

    /// Recovery in the given mode.
    pub async fn recover_in(&self, mode: RecoveryMode) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        match self.inner.store.clean_failed_creates(false).await {
            Ok(removed) => report.removed_leftovers = removed,
            Err(e) => tracing::warn!(error = %e, "leftovers of failed creates not removed"),
        }
        for id in self.inner.store.list().await? {
            match self.recover_one(&id, mode).await {
                Ok(Outcome::Recovered(r)) => report.recovered.push(r),
                Ok(Outcome::LeftAlone(reason)) => report.left_alone.push(LeftAlone {
                    operation_id: id,
                    reason,
                }),
                Ok(Outcome::NotAbandoned) | Err(Error::OperationNotFound(_)) => {}
                Err(e) => report.skipped.push((id, e.to_string())),
            }
        }
        Ok(report)
    }

    /// What an explicit recovery would do now, changing nothing.
    pub async fn recovery_plan(&self) -> Result<Vec<PlannedRecovery>> {
        let store = &self.inner.store;
        let me = &self.inner.identity;
        let mut plans = Vec::new();
        // The mount table and home directory are read once for all operations.
        let protected = super::temps::protected(&self.inner);
        for id in store.list().await? {
            // Unreadable operations are reported by the caller, as `recover` reports them.
            let Ok(data) = store.read(&id).await else {
                continue;
            };
            if !is_abandoned(&data, &self.inner) {
                continue;
            }
            let provenance = match store.provenance(&id).await {
                Ok(p) => p,
                Err(Error::OperationNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let left_alone = refusal(&data, provenance, me, RecoveryMode::Explicit);
            let automatic = refusal(&data, provenance, me, RecoveryMode::Automatic).is_none();
            let mut plan = PlannedRecovery {
                operation_id: id.clone(),
                state: data.operation_state,
                participants: data.participants.keys().cloned().collect(),
                call_frames: data.call_frames.len(),
                recorded_workers: data
                    .call_frames
                    .iter()
                    .filter(|f| f.process.is_some())
                    .count(),
                temp_resources: data.temp_resources.len(),
                delete: Vec::new(),
                signal: Vec::new(),
                untouched: Vec::new(),
                left_alone,
                automatic,
            };
            if plan.left_alone.is_none() {
                for w in data.call_frames.iter().filter_map(|f| f.process.as_ref()) {
                    let found = plan_recorded(&recorded_group(&id, w));
                    plan.signal.extend(found.processes);
                    plan.untouched.extend(found.refused);
                }
                if !data.operation_state.is_final() {
                    let (delete, keep) =
                        core::temps::split(&data, data.temp_resources.clone(), &here(me));
                    // The removal function's own refusals show here as they would then.
                    for t in delete {
                        let shown = TempResource::display_path(&t.path);
                        match t.target().map(|p| protected.check(&p)) {
                            Ok(Ok(())) => plan.delete.push(shown),
                            Ok(Err(why)) => plan
                                .untouched
                                .push(format!("temp resource `{shown}`: refused: {why}")),
                            Err(e) => plan.untouched.push(format!("temp resource `{shown}`: {e}")),
                        }
                    }
                    plan.untouched.extend(keep.into_iter().map(|(t, why)| {
                        format!(
                            "temp resource `{}`: {why}",
                            TempResource::display_path(&t.path)
                        )
                    }));
                }
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    async fn recover_one(&self, id: &OperationId, mode: RecoveryMode) -> Result<Outcome> {
        let store = &self.inner.store;
        let me = self.inner.config.participant.clone();
        let now = self.inner.clock.now();
        // Phase 1: judge (outside the change), then fence the dead and take the cleanup
        // over, unless the operation changed since it was judged: then judge again.
        let mut attempts = 0;
        let (taken, final_state) = loop {
            attempts += 1;
            let data = store.read(id).await?;
            if !is_abandoned(&data, &self.inner) {
                return Ok(Outcome::NotAbandoned);
            }
            let provenance = store.provenance(id).await?;
            if let Some(reason) = refusal(&data, provenance, &self.inner.identity, mode) {
                return Ok(Outcome::LeftAlone(reason));
            }
            let judged = Roster::of(&data);
            let mut taken = None;
            let marked = store
                .modify(id, &mut |data: &mut LedgerData| {
                    taken = core::recovery::take_over(data, &judged, &me, now);
                    match taken {
                        Some(_) => Ok(()),
                        None => Err(Error::invalid(
                            format!("operation `{id}`"),
                            "changed while it was judged",
                        )),
                    }
                })
                .await;
            match (marked, taken) {
                (Ok(data), Some(taken)) => break (taken, data.operation_state),
                (Err(_), None) if attempts < RECOVERY_ATTEMPTS => continue,
                (Err(e), _) => return Err(e),
                (Ok(_), None) => {
                    return Err(Error::invalid(
                        format!("operation `{id}`"),
                        "the store reported a change that never ran",
                    ));
                }
            }
        };
        let TakenOver { dead, workers } = taken;
        for p in &dead {
            self.log_line(
                id,
                &format!("CRASH_DETECTED participant={p} reason=found dead by recovery"),
            )
            .await;
        }
        // Phase 2: stop what they left running, delete what they left behind.
        let grace = self.inner.config.worker_grace;
        let (stopped, mut untouched) = stop_workers_reporting(id, &workers, grace).await;
        let mut deleted = Vec::new();
        if !final_state.is_final() {
            let here = here(&self.inner.identity);
            let mut swept = Default::default();
            store
                .modify(id, &mut |data: &mut LedgerData| {
                    swept = core::cleanup::remove(data, &here, now);
                    Ok(())
                })
                .await?;
            let Swept { delete, kept } = swept;
            untouched.extend(kept);
            deleted = super::temps::delete_stored(&self.inner, id, &delete).await;
            self.log_line(
                id,
                &format!(
                    "RECOVERED by={me} stoppedWorkers={stopped} deletedTempResources={}",
                    deleted.len()
                ),
            )
            .await;
        }
        for note in &untouched {
            self.log_line(id, &format!("RECOVERY_REFUSED {note}")).await;
        }
        let archive = store.archive(id).await?.to_string();
        if let Some(f) = &self.inner.callback.on_backup_created {
            f(&archive);
        }
        Ok(Outcome::Recovered(Recovered {
            operation_id: id.clone(),
            dead_participants: dead,
            stopped_workers: stopped,
            deleted_temp_resources: deleted,
            archive,
            untouched,
        }))
    }

    async fn log_line(&self, op: &OperationId, message: &str) {
        let _ = self
            .inner
            .log(op, crate::model::LogLevel::Info, message)
            .await;
    }
}

/// What recovery did with one operation.
enum Outcome {
    NotAbandoned,
    LeftAlone(String),
    Recovered(Recovered),
}
