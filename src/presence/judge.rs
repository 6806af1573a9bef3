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
//!
//! Every judgement of one connection reads the same stale threshold ([`Judge`] holds the
//! only copy), so a beat's stale list, the failure cleanup's and recovery's views agree.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{SharedClock, Timestamp, age_ms};
use crate::ids::ParticipantId;
use crate::model::{LedgerData, Participant, ParticipantState};
use crate::process::{self as identity, ProcessIdentity};
use crate::store::remote::ServerAges;

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

/// The ages a beat saw: every active participant's (registered, or only seen in frames
/// for operations of the original), and the others past the threshold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ages {
    pub ages: BTreeMap<ParticipantId, u64>,
    /// Other participants whose heartbeat is older than the threshold and whom no pause
    /// excuses.
    pub stale: Vec<ParticipantId>,
}

/// The liveness judgement of one connection: who this process is, the one stale
/// threshold, the longest excused pause, and the clock ages are measured with.
#[derive(Debug)]
pub(crate) struct Judge {
    pub identity: SelfIdentity,
    stale_threshold_ms: AtomicU64,
    max_pause: Duration,
    clock: SharedClock,
    /// Heartbeat ages measured by a server's clock (remote presence); without them, or
    /// for a participant the server said nothing of, the age of `lastHeartbeat`.
    server_ages: Option<Arc<ServerAges>>,
}

impl Judge {
    pub fn new(
        identity: SelfIdentity,
        stale_threshold: Duration,
        max_pause: Duration,
        clock: SharedClock,
    ) -> Arc<Self> {
        Self::with_server_ages(identity, stale_threshold, max_pause, clock, None)
    }

    pub fn with_server_ages(
        identity: SelfIdentity,
        stale_threshold: Duration,
        max_pause: Duration,
        clock: SharedClock,
        server_ages: Option<Arc<ServerAges>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            identity,
            stale_threshold_ms: AtomicU64::new(millis(stale_threshold)),
            max_pause,
            clock,
            server_ages,
        })
    }

    /// The age of a registered participant's last heartbeat: by the server's clock when
    /// a server reported it, else by the `lastHeartbeat` field.
    fn heartbeat_age(&self, now: Timestamp, p: &Participant) -> u64 {
        self.server_ages
            .as_ref()
            .and_then(|ages| ages.age_ms(&p.host, p.pid, p.epoch))
            .unwrap_or_else(|| age_ms(now, p.last_heartbeat))
    }

    pub fn stale_threshold(&self) -> Duration {
        Duration::from_millis(self.threshold_ms())
    }

    pub fn set_stale_threshold(&self, threshold: Duration) {
        self.stale_threshold_ms
            .store(millis(threshold), Ordering::Relaxed);
    }

    fn threshold_ms(&self) -> u64 {
        self.stale_threshold_ms.load(Ordering::Relaxed)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether the participant can be checked by pid (same host, boot and PID namespace).
    pub fn is_local(&self, p: &Participant) -> bool {
        let me = &self.identity;
        p.host == me.host
            && p.boot_id.is_some()
            && p.boot_id == me.boot_id
            && p.pid_namespace.is_some()
            && p.pid_namespace == me.pid_ns
    }

    /// Liveness of a registered participant.
    pub fn participant_alive(&self, p: &Participant) -> bool {
        p.state == ParticipantState::Active && self.process_running(p)
    }

    /// Whether the participant's process still runs (by heartbeat age when it is not on
    /// this machine), whatever its state in the operation: one that has just ended an
    /// operation archives it next.
    pub fn process_running(&self, p: &Participant) -> bool {
        if self.is_local(p) {
            return match identity_of(p) {
                Some(identity) => identity.is_same_process_alive(),
                None => ProcessIdentity::of(p.pid).is_some(),
            };
        }
        self.heartbeat_age(self.now(), p) <= self.threshold_ms() || self.pause_excuses(p)
    }

    /// Whether a participant that recorded a pause is excused from the heartbeat
    /// judgement now: on this machine while its process exists, elsewhere for
    /// `max_pause`.
    pub fn pause_excuses(&self, p: &Participant) -> bool {
        let Some(paused_at) = p.paused_at else {
            return false;
        };
        if self.is_local(p) {
            return self.process_running(p);
        }
        age_ms(self.now(), paused_at) <= millis(self.max_pause)
    }

    /// Liveness of whoever owns frames under this participant id; frames of participants
    /// missing from the registry (written by the original) are judged by frame heartbeat.
    pub fn is_live(&self, data: &LedgerData, id: &ParticipantId) -> bool {
        if let Some(p) = data.participants.get(id) {
            return self.participant_alive(p);
        }
        let threshold = self.threshold_ms();
        let now = self.now();
        data.call_frames
            .iter()
            .filter(|f| &f.participant_id == id)
            .any(|f| age_ms(now, f.last_heartbeat) <= threshold)
    }

    /// Whether an operation without participant registry (written by the original) shows
    /// a sign of life: its top-level heartbeat or a frame's is younger than the stale
    /// threshold. Nobody being registered proves nothing.
    pub fn unregistered_alive(&self, data: &LedgerData) -> bool {
        let threshold = self.threshold_ms();
        let now = self.now();
        age_ms(now, data.last_heartbeat) <= threshold
            || data
                .call_frames
                .iter()
                .any(|f| age_ms(now, f.last_heartbeat) <= threshold)
    }

    /// The heartbeat ages in `data` as `me` sees them now, and who is stale. A
    /// participant paused by job control is judged by pid (on this machine) or excused
    /// for a bounded time (elsewhere), not by the age of its last beat.
    pub fn ages(&self, data: &LedgerData, me: &ParticipantId) -> Ages {
        let now = self.now();
        let threshold = self.threshold_ms();
        let mut ages = BTreeMap::new();
        for (id, p) in &data.participants {
            if p.state == ParticipantState::Active {
                ages.insert(id.clone(), self.heartbeat_age(now, p));
            }
        }
        for frame in &data.call_frames {
            if !data.participants.contains_key(&frame.participant_id) {
                let age = age_ms(now, frame.last_heartbeat);
                ages.entry(frame.participant_id.clone())
                    .and_modify(|a: &mut u64| *a = (*a).min(age))
                    .or_insert(age);
            }
        }
        let paused = |id: &ParticipantId| {
            data.participants
                .get(id)
                .is_some_and(|p| self.pause_excuses(p))
        };
        let stale = ages
            .iter()
            .filter(|(id, age)| *id != me && **age > threshold && !paused(id))
            .map(|(id, _)| id.clone())
            .collect();
        Ages { ages, stale }
    }
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
