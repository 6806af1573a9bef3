//! What entitles recovery to act on an operation: the rules of "destructive actions only
//! on proof" applied to what the ledger says. The ledger is input, never proof by itself.
//!
//! - **Abandoned**: every registered participant is dead (by pid and start time within
//!   this host, boot and PID namespace; by heartbeat age otherwise). An operation without
//!   participant registry (written by the original) is abandoned only once its top-level
//!   and frame heartbeats are all older than the stale threshold.
//! - **Whose record**: recovery never acts on a record that someone else could have
//!   written: the store must show it is owned by this user and not writable by others.
//! - **Automatic recovery** (acting unasked, as `run` does before it starts) further needs
//!   every participant proven to have run on this host, in this boot, in this PID
//!   namespace, as this user. Anything else is left to an explicit `tom-ledger recover`.
//! - **Temp resources** are handed to the removal function only when their owner ran on
//!   this host as this user (or, for the original's operations, when an explicit recover
//!   was asked for); the removal function applies the path rules.

use crate::ids::ParticipantId;
use crate::model::{LedgerData, ParticipantState, TempResource};
use crate::store::Provenance;

use super::LedgerInner;
use super::liveness::{self, SelfIdentity};

/// Who asked for the recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Acting unasked (`run` before it starts): only operations proven to be ours.
    Automatic,
    /// `tom-ledger recover`: any abandoned operation whose record is ours.
    Explicit,
}

/// Whether nobody is left to finish the operation.
pub(crate) fn is_abandoned(data: &LedgerData, ledger: &LedgerInner) -> bool {
    if data.participants.is_empty() {
        // The original's operations: no registry, so only heartbeats can tell.
        return !liveness::unregistered_alive(data, ledger);
    }
    if data.operation_state.is_final() {
        // Whoever ended it archives it next: left to them while they run.
        return !data
            .participants
            .values()
            .any(|p| liveness::process_running(p, ledger));
    }
    let live_participant = data
        .participants
        .iter()
        .filter(|(_, p)| p.state == ParticipantState::Active)
        .any(|(id, _)| liveness::is_live(data, id, ledger));
    let live_frame = data
        .call_frames
        .iter()
        .filter(|f| !data.participants.contains_key(&f.participant_id))
        .any(|f| liveness::is_live(data, &f.participant_id, ledger));
    !live_participant && !live_frame
}

/// Why recovery in `mode` may not act on this operation, if it may not.
pub(crate) fn refusal(
    data: &LedgerData,
    provenance: Option<Provenance>,
    me: &SelfIdentity,
    mode: RecoveryMode,
) -> Option<String> {
    let Some(provenance) = provenance else {
        return Some("its store cannot show who wrote the record".into());
    };
    if provenance.owner_uid != me.uid {
        return Some(format!(
            "its file belongs to user {}, not to user {}",
            provenance.owner_uid, me.uid
        ));
    }
    if provenance.writable_by_others {
        return Some("its file is writable by other users (or is not a plain file)".into());
    }
    if mode == RecoveryMode::Explicit {
        return None;
    }
    if data.participants.is_empty() {
        return Some("it has no participant registry (written by another tool)".into());
    }
    data.participants
        .iter()
        .find_map(|(id, p)| foreign_origin(id, p, me))
}

/// Why a participant is not proven to have run here, as this user, if it is not.
fn foreign_origin(
    id: &ParticipantId,
    p: &crate::model::Participant,
    me: &SelfIdentity,
) -> Option<String> {
    if p.host != me.host {
        return Some(format!("participant {id} ran on host `{}`", p.host));
    }
    if p.boot_id.is_none() || p.boot_id != me.boot_id {
        return Some(format!("participant {id} ran in another boot"));
    }
    if p.pid_namespace.is_none() || p.pid_namespace != me.pid_ns {
        return Some(format!("participant {id} ran in another PID namespace"));
    }
    if p.uid != Some(me.uid) {
        return Some(match p.uid {
            Some(uid) => format!("participant {id} ran as user {uid}"),
            None => format!("participant {id} has no recorded user"),
        });
    }
    None
}

/// Splits the temp resources into those recovery hands to the removal function and those
/// it leaves (with the reason): a path registered by a participant on another host or as
/// another user is not ours to delete.
pub(crate) fn split_temps(
    data: &LedgerData,
    temps: Vec<TempResource>,
    me: &SelfIdentity,
) -> (Vec<TempResource>, Vec<(TempResource, String)>) {
    let mut delete = Vec::new();
    let mut keep = Vec::new();
    for t in temps {
        match why_not_ours(data, &t, me) {
            None => delete.push(t),
            Some(why) => keep.push((t, why)),
        }
    }
    (delete, keep)
}

fn why_not_ours(data: &LedgerData, t: &TempResource, me: &SelfIdentity) -> Option<String> {
    if data.participants.is_empty() {
        return None;
    }
    let owner = t.owner_id.as_ref()?;
    let Some(p) = data.participants.get(owner) else {
        return Some(format!("registered by {owner}, who is not a participant"));
    };
    if !p.host.is_empty() && p.host != me.host {
        return Some(format!("registered on host `{}`", p.host));
    }
    match p.uid {
        Some(uid) if uid != me.uid => Some(format!("registered by user {uid}")),
        _ => None,
    }
}
