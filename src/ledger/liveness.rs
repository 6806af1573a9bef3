//! Is a participant alive? On the same host, boot and PID namespace: its pid runs and has
//! the same start time (a reused pid is never mistaken for the old process). Elsewhere
//! (another machine, or a container sharing this one's host name, boot id and a ledger
//! volume): its heartbeat is younger than the stale threshold. Operations written by the
//! original, which has no participant registry, are judged by their heartbeats alone.
//!
//! A participant stopped by job control records `pausedAt` before it stops. A paused
//! participant on this machine is judged by its pid only, however long the pause lasts
//! (killed while stopped, it is seen at once). One elsewhere cannot be checked: it is
//! excused for `max_pause` from when it paused, then judged by heartbeat age again.

use crate::clock::age_ms;
use crate::ids::ParticipantId;
use crate::model::{LedgerData, Participant, ParticipantState};
use crate::process::{self as identity, ProcessIdentity};

use super::LedgerInner;

/// Facts about this process that other participants use to judge it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SelfIdentity {
    pub host: String,
    pub boot_id: Option<String>,
    pub start_ticks: Option<u64>,
    pub pid_ns: Option<u64>,
    pub uid: u32,
}

impl SelfIdentity {
    pub fn current() -> Self {
        Self {
            host: identity::hostname(),
            boot_id: identity::boot_id().map(str::to_owned),
            start_ticks: ProcessIdentity::current().map(|i| i.start_ticks),
            pid_ns: identity::pid_namespace(),
            uid: identity::user_id(),
        }
    }
}

/// Whether the participant can be checked by pid (same host, boot and PID namespace).
pub(crate) fn is_local(p: &Participant, ledger: &LedgerInner) -> bool {
    let me = &ledger.identity;
    p.host == me.host
        && p.boot_id.is_some()
        && p.boot_id == me.boot_id
        && p.pid_namespace.is_some()
        && p.pid_namespace == me.pid_ns
}

/// The participant's identity, for checking its pid from this namespace.
pub(crate) fn identity_of(p: &Participant) -> Option<ProcessIdentity> {
    Some(ProcessIdentity {
        pid: p.pid,
        start_ticks: p.start_ticks?,
        boot_id: p.boot_id.clone(),
        pid_ns: p.pid_namespace,
    })
}

/// Liveness of a registered participant.
pub(crate) fn participant_alive(p: &Participant, ledger: &LedgerInner) -> bool {
    p.state == ParticipantState::Active && process_running(p, ledger)
}

/// Whether the participant's process still runs (by heartbeat age when it is not on this
/// machine), whatever its state in the operation: one that has just ended an operation
/// archives it next.
pub(crate) fn process_running(p: &Participant, ledger: &LedgerInner) -> bool {
    if is_local(p, ledger) {
        return match identity_of(p) {
            Some(identity) => identity.is_same_process_alive(),
            None => ProcessIdentity::of(p.pid).is_some(),
        };
    }
    age_ms(ledger.clock.now(), p.last_heartbeat) <= ledger.config.stale_threshold.as_millis() as u64
        || pause_excuses(p, ledger)
}

/// Whether a participant that recorded a pause is excused from the heartbeat judgement
/// now: on this machine while its process exists, elsewhere for `max_pause`.
pub(crate) fn pause_excuses(p: &Participant, ledger: &LedgerInner) -> bool {
    let Some(paused_at) = p.paused_at else {
        return false;
    };
    if is_local(p, ledger) {
        return process_running(p, ledger);
    }
    age_ms(ledger.clock.now(), paused_at) <= ledger.config.max_pause.as_millis() as u64
}

/// Liveness of whoever owns frames under this participant id; frames of participants
/// missing from the registry (written by the original) are judged by frame heartbeat.
pub(crate) fn is_live(data: &LedgerData, id: &ParticipantId, ledger: &LedgerInner) -> bool {
    if let Some(p) = data.participants.get(id) {
        return participant_alive(p, ledger);
    }
    let threshold = ledger.config.stale_threshold.as_millis() as u64;
    let now = ledger.clock.now();
    data.call_frames
        .iter()
        .filter(|f| &f.participant_id == id)
        .any(|f| age_ms(now, f.last_heartbeat) <= threshold)
}

/// Whether an operation without participant registry (written by the original) shows a
/// sign of life: its top-level heartbeat or a frame's is younger than the stale threshold.
/// Nobody being registered proves nothing.
pub(crate) fn unregistered_alive(data: &LedgerData, ledger: &LedgerInner) -> bool {
    let threshold = ledger.config.stale_threshold.as_millis() as u64;
    let now = ledger.clock.now();
    age_ms(now, data.last_heartbeat) <= threshold
        || data
            .call_frames
            .iter()
            .any(|f| age_ms(now, f.last_heartbeat) <= threshold)
}
