//! Participant liveness (presence): who of an operation's participants is alive, kept
//! apart from the shared document so each backend can use its cheapest means.
//!
//! Two halves:
//! - **Keeping oneself alive**: a [`Registration`] is a task that beats at once, then every
//!   interval plus a random jitter, until a beat says stop or the registration is
//!   dropped. The beat itself is handed in: today the ledger's fenced refresh of the
//!   participant's heartbeat field (`ledger/heartbeat.rs`, through `Store::refresh`); a
//!   server or etcd presence hands in its own keep-alive instead, on the same schedule.
//! - **Following the others**: [`Presence::follow`] gives a [`Roster`] that is shown the
//!   operation's views as they arrive, and a stream of [`PresenceEvent`]s: a participant
//!   `Joined` (first seen active at an epoch) or `Expired` (its process is gone, or its
//!   heartbeat is older than the stale threshold). The ledger consumes the expired events
//!   and runs the crash declaration on them (`ledger/crash.rs`); presence decides nothing
//!   about the operation itself.
//!
//! One stale threshold per connection judges everything: a beat's stale list, the
//! liveness checks of joins, failure cleanups and recovery. It is set by
//! `Connect::stale_threshold` (default 15 s); `Operation::set_staleness_threshold` changes
//! that same threshold. Participants paused by job control (`pausedAt`) keep their rules:
//! on this machine judged by pid for as long as the pause lasts, elsewhere excused for
//! `Connect::max_pause`.
//!
//! Backends:
//! - **File** ([`FilePresence`], the one that exists): a beat refreshes the participant's
//!   `lastHeartbeat` in the operation file through `Store::refresh`, which keeps no trail
//!   entry. Peers on this host, boot and PID namespace are watched through a pidfd each
//!   (pid plus start time, so a reused pid is never taken for the peer): a SIGKILLed peer
//!   expires within milliseconds. Everyone else is judged by heartbeat age at each beat.
//!   The on-disk format has no room for heartbeats outside the document, so a beat still
//!   rewrites the file and wakes the other watchers; what the roster saves is the
//!   re-judging: a view whose registry (ids, epochs, states) is unchanged costs one walk
//!   over the registry and nothing else.
//! - **Server** ([`RemotePresence`]): a beat is a small request that the server stamps
//!   with its own clock and keeps beside the document, not in it ([`Presence::keep_alive`]);
//!   every answer carrying an operation brings its participants' ages by the server's
//!   clock, and judgements use those (no clock skew between machines). The server pushes
//!   expired participants on the event stream; the roster forwards them. Peers on this
//!   machine are still watched through a pidfd.
//! - **etcd** ([`EtcdPresence`], feature `etcd`): each participant keeps a key per
//!   operation bound to one lease whose TTL is the stale threshold, renewed by the
//!   connection every third of the TTL; lease expiry (key deletion, seen through a watch)
//!   is `Expired`, judged by etcd's clock, and a participant whose key is present is never
//!   judged dead by heartbeat age (no clock skew). Local peers keep their pidfd watches.
//!   The document's heartbeat field is still refreshed at each beat, as the fallback for
//!   participants without a key.
//!
//! The process layer gives the pidfd; this module knows nothing of files or HTTP.

#[cfg(feature = "etcd")]
mod etcd;
mod file;
mod judge;
mod registration;
mod remote;

use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::Result;
use crate::future::BoxFuture;
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, Participant};

#[cfg(feature = "etcd")]
pub use etcd::EtcdPresence;
/// A beat a backend keeps itself; it gives the operation as it is after the beat.
pub type KeepAlive =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<LedgerData>> + Send>>;

pub use file::FilePresence;
pub use judge::Ages;
pub(crate) use judge::SelfIdentity;
pub use registration::{
    BeatFuture, BeatSchedule, HeartbeatError, HeartbeatErrorType, HeartbeatResult, Registration,
};
pub use remote::RemotePresence;

/// A change in who is present in an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceEvent {
    /// First seen active at this epoch.
    Joined {
        participant: ParticipantId,
        epoch: u64,
    },
    /// Its process is gone or its heartbeat is stale: a crash to declare (the ledger
    /// checks the epoch is still the live one before it does).
    Expired {
        participant: ParticipantId,
        epoch: u64,
        reason: String,
    },
}

/// The stream of presence events of one followed operation; it ends when its
/// [`Roster`] is dropped (and every watch it started has ended).
pub type PresenceEvents = mpsc::UnboundedReceiver<PresenceEvent>;

/// How a backend judges and follows participants.
pub trait Presence: Send + Sync + std::fmt::Debug + 'static {
    /// The one stale threshold of every judgement.
    fn stale_threshold(&self) -> Duration;

    /// Change the one stale threshold (every judgement from now on).
    fn set_stale_threshold(&self, threshold: Duration);

    /// Whether a registered participant is active and alive.
    fn participant_alive(&self, p: &Participant) -> bool;

    /// Whether the participant's process still runs, whatever its state in the
    /// operation (elsewhere: judged by heartbeat age or an excused pause).
    fn process_running(&self, p: &Participant) -> bool;

    /// Whether whoever owns frames under `id` is alive; frames of participants missing
    /// from the registry (written by the original) are judged by their heartbeats.
    fn is_live(&self, data: &LedgerData, id: &ParticipantId) -> bool;

    /// Whether an operation without participant registry shows a sign of life.
    fn unregistered_alive(&self, data: &LedgerData) -> bool;

    /// The heartbeat ages in a beat's view as `me` sees them now, and who else is stale.
    fn ages(&self, data: &LedgerData, me: &ParticipantId) -> Ages;

    /// Of the participants `ages` found stale, those the backend still finds stale
    /// when asked directly. A backend whose liveness record is followed through a watch
    /// (etcd) asks the record itself, so a watch that has not yet caught up with a
    /// registration never turns into a false crash. The default confirms them all.
    fn confirm_stale<'a>(
        &'a self,
        data: &'a LedgerData,
        stale: Vec<ParticipantId>,
    ) -> BoxFuture<'a, Vec<ParticipantId>> {
        let _ = data;
        Box::pin(std::future::ready(stale))
    }

    /// Follow the participants of one operation as `me`. Must be called within a tokio
    /// runtime (watches run as tasks).
    fn follow(&self, me: ParticipantId) -> (Box<dyn Roster>, PresenceEvents);

    /// The beat of `me` at `epoch` when this backend keeps heartbeats beside the
    /// document (a server); `None`: the ledger refreshes the heartbeat field in the
    /// document. A participant no longer active at that epoch gets `Error::Fenced`.
    fn keep_alive(&self, op: &OperationId, me: &ParticipantId, epoch: u64) -> Option<KeepAlive> {
        let _ = (op, me, epoch);
        None
    }
}

/// The participants of one operation as one participant follows them.
pub trait Roster: Send {
    /// A fresh view of the operation: newly seen active participants are announced as
    /// joined, and those this backend can watch directly are watched. Returns whether
    /// the registry (ids, epochs, states) changed since the last view; a view that only
    /// moved heartbeats is no news and is not judged again.
    fn see(&mut self, data: &LedgerData) -> bool;

    /// Announce the active participants among `stale` as expired.
    fn expire_stale(&mut self, data: &LedgerData, stale: &[ParticipantId]);
}
