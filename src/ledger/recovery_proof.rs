//! What entitles recovery to act on an operation: the rules of "destructive actions only
//! on proof" applied to what the ledger says. The ledger is input, never proof by itself.
//!
//! - **Abandoned**: every registered participant is dead (by pid and start time within
//!   this host, boot and PID namespace; by heartbeat age otherwise). An operation without
//!   participant registry (written by the original) is abandoned only once its top-level
//!   and frame heartbeats are all older than the stale threshold.
//! - **Whose record**: recovery never acts on a record that someone else could have
//!   written: where the store can tell (files), it must be owned by this user and not
//!   writable by others.
//! - **Automatic recovery** (acting unasked, as `run` does before it starts) further needs
//!   every participant proven to have run on this host, in this boot, in this PID
//!   namespace, as this user. Anything else is left to an explicit `tom-ledger recover`.
//! - **Temp resources** are handed to the removal function only when their owner ran on
//!   this host as this user (or, for the original's operations, when an explicit recover
//!   was asked for); the removal function applies the path rules.

use crate::ids::ParticipantId;
use crate::model::{LedgerData, ParticipantState};
use crate::store::Provenance;

use super::LedgerInner;
use super::core::Here;
use crate::presence::SelfIdentity;

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
        return !ledger.presence.unregistered_alive(data);
    }
    if data.operation_state.is_final() {
        // Whoever ended it archives it next: left to them while they run.
        return !data
            .participants
            .values()
            .any(|p| ledger.presence.process_running(p));
    }
    let live_participant = data
        .participants
        .iter()
        .filter(|(_, p)| p.state == ParticipantState::Active)
        .any(|(id, _)| ledger.presence.is_live(data, id));
    let live_frame = data
        .call_frames
        .iter()
        .filter(|f| !data.participants.contains_key(&f.participant_id))
        .any(|f| ledger.presence.is_live(data, &f.participant_id));
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
        // Asked for explicitly, the signals and paths rules still hold.
        return (mode == RecoveryMode::Automatic)
            .then(|| "its store cannot show who wrote the record".into());
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

/// This process as the judge of whose temp resources recovery may delete (see
/// `core::temps`): a path registered by a participant on another host or as another user
/// is not ours to delete.
pub(crate) fn here(me: &SelfIdentity) -> Here {
    Here {
        host: me.host.clone(),
        uid: me.uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OperationId;
    use crate::model::Participant;

    fn me() -> SelfIdentity {
        SelfIdentity {
            host: "here".into(),
            boot_id: Some("boot".into()),
            start_ticks: Some(1),
            pid_ns: Some(7),
            uid: 1000,
        }
    }

    fn ours(data: &mut LedgerData, id: &str, tweak: impl FnOnce(&mut Participant)) {
        let now = chrono::Utc::now();
        let mut p = Participant {
            pid: 42,
            start_ticks: Some(1),
            host: "here".into(),
            boot_id: Some("boot".into()),
            pid_namespace: Some(7),
            uid: Some(1000),
            epoch: 1,
            last_heartbeat: now,
            joined_at: now,
            state: ParticipantState::Active,
            spawned_by: None,
            paused_at: None,
        };
        tweak(&mut p);
        data.participants
            .insert(ParticipantId::parse(id).expect("id"), p);
    }

    fn data() -> LedgerData {
        LedgerData::new(
            OperationId::parse("op").expect("id"),
            ParticipantId::parse("a").expect("id"),
            chrono::Utc::now(),
        )
    }

    const PRIVATE: Option<Provenance> = Some(Provenance {
        owner_uid: 1000,
        writable_by_others: false,
    });

    #[test]
    fn automatic_recovery_needs_every_participant_proven_ours() {
        use RecoveryMode::*;
        let mut d = data();
        assert!(
            refusal(&d, PRIVATE, &me(), Automatic).is_some(),
            "no registry"
        );
        assert_eq!(refusal(&d, PRIVATE, &me(), Explicit), None);
        ours(&mut d, "a", |_| {});
        assert_eq!(refusal(&d, PRIVATE, &me(), Automatic), None);
        type Tweak = fn(&mut Participant);
        let cases: [(&str, Tweak); 5] = [
            ("host", |p| p.host = "there".into()),
            ("boot", |p| p.boot_id = Some("other".into())),
            ("namespace", |p| p.pid_namespace = Some(8)),
            ("unknown namespace", |p| p.pid_namespace = None),
            ("user", |p| p.uid = Some(0)),
        ];
        for (what, tweak) in cases {
            let mut d = d.clone();
            ours(&mut d, "b", tweak);
            let why = refusal(&d, PRIVATE, &me(), Automatic);
            assert!(
                why.as_deref().is_some_and(|w| w.contains("b ")),
                "{what}: {why:?}"
            );
            assert_eq!(refusal(&d, PRIVATE, &me(), Explicit), None, "{what}");
        }
    }

    #[test]
    fn records_others_could_have_written_are_never_acted_on() {
        let mut d = data();
        ours(&mut d, "a", |_| {});
        for mode in [RecoveryMode::Automatic, RecoveryMode::Explicit] {
            let foreign = Some(Provenance {
                owner_uid: 0,
                writable_by_others: false,
            });
            let open = Some(Provenance {
                owner_uid: 1000,
                writable_by_others: true,
            });
            assert!(refusal(&d, foreign, &me(), mode).is_some_and(|w| w.contains("user 0")));
            assert!(refusal(&d, open, &me(), mode).is_some_and(|w| w.contains("writable")));
        }
        assert!(refusal(&d, None, &me(), RecoveryMode::Automatic).is_some());
        assert_eq!(refusal(&d, None, &me(), RecoveryMode::Explicit), None);
    }
}
