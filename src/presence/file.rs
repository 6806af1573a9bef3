//! Presence on the file store: the heartbeat field of the participant's registry entry,
//! written as a refresh (no trail entry), judged with one stale threshold; and, for peers
//! on this host, boot and PID namespace, a pidfd per peer so a killed peer is seen within
//! milliseconds instead of after the threshold.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::ids::ParticipantId;
use crate::model::{LedgerData, Participant, ParticipantState};
use crate::process::exited;

use super::judge::{Ages, Judge, SelfIdentity, identity_of};
use super::{Presence, PresenceEvent, PresenceEvents, Roster};

/// File presence for this process.
#[derive(Debug)]
pub struct FilePresence {
    judge: Arc<Judge>,
}

impl FilePresence {
    /// Presence judged from this process (its host, boot and PID namespace), with one
    /// stale threshold, the longest pause excused for peers elsewhere, and a clock.
    pub fn new(stale_threshold: Duration, max_pause: Duration, clock: SharedClock) -> Self {
        Self::with_identity(SelfIdentity::current(), stale_threshold, max_pause, clock)
    }

    pub(crate) fn with_identity(
        identity: SelfIdentity,
        stale_threshold: Duration,
        max_pause: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            judge: Judge::new(identity, stale_threshold, max_pause, clock),
        }
    }

    /// Presence judged with a server's heartbeat ages where it reported them.
    pub(crate) fn with_judge(judge: Arc<Judge>) -> Self {
        Self { judge }
    }
}

impl Presence for FilePresence {
    fn stale_threshold(&self) -> Duration {
        self.judge.stale_threshold()
    }

    fn set_stale_threshold(&self, threshold: Duration) {
        self.judge.set_stale_threshold(threshold);
    }

    fn participant_alive(&self, p: &Participant) -> bool {
        self.judge.participant_alive(p)
    }

    fn process_running(&self, p: &Participant) -> bool {
        self.judge.process_running(p)
    }

    fn is_live(&self, data: &LedgerData, id: &ParticipantId) -> bool {
        self.judge.is_live(data, id)
    }

    fn unregistered_alive(&self, data: &LedgerData) -> bool {
        self.judge.unregistered_alive(data)
    }

    fn ages(&self, data: &LedgerData, me: &ParticipantId) -> Ages {
        self.judge.ages(data, me)
    }

    fn follow(&self, me: ParticipantId) -> (Box<dyn Roster>, PresenceEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        let roster = FileRoster {
            judge: self.judge.clone(),
            me,
            known: BTreeMap::new(),
            watched: HashSet::new(),
            watches: Vec::new(),
            events: tx,
        };
        (Box::new(roster), rx)
    }
}

/// The participants of one operation as one participant follows them.
struct FileRoster {
    judge: Arc<Judge>,
    me: ParticipantId,
    /// The registry as last seen: id -> (epoch, state).
    known: BTreeMap<ParticipantId, (u64, ParticipantState)>,
    /// Local peers whose exit is watched, by id and epoch.
    watched: HashSet<(ParticipantId, u64)>,
    watches: Vec<JoinHandle<()>>,
    events: mpsc::UnboundedSender<PresenceEvent>,
}

impl FileRoster {
    /// Whether `data`'s registry is the one last seen (ids, epochs and states; heartbeat
    /// ages do not count): a heartbeat-only change is then no news, and costs one
    /// allocation-free walk over the registry.
    fn unchanged(&self, data: &LedgerData) -> bool {
        self.known.len() == data.participants.len()
            && self
                .known
                .iter()
                .zip(&data.participants)
                .all(|((id, (epoch, state)), (pid, p))| {
                    id == pid && *epoch == p.epoch && *state == p.state
                })
    }

    /// Watch a local peer's process; its exit is announced as expired.
    fn watch_exit(&mut self, id: &ParticipantId, p: &Participant) {
        let Some(identity) = identity_of(p) else {
            return;
        };
        if !self.watched.insert((id.clone(), p.epoch)) {
            return;
        }
        self.watches.retain(|w| !w.is_finished());
        let events = self.events.clone();
        let participant = id.clone();
        let epoch = p.epoch;
        self.watches.push(tokio::spawn(async move {
            exited(&identity).await;
            let _ = events.send(PresenceEvent::Expired {
                participant,
                epoch,
                reason: format!("process {} exited", identity.pid),
            });
        }));
    }
}

impl Roster for FileRoster {
    fn see(&mut self, data: &LedgerData) -> bool {
        if self.unchanged(data) {
            return false;
        }
        for (id, p) in &data.participants {
            let seen = self.known.get(id);
            let news = seen.is_none_or(|(epoch, _)| *epoch != p.epoch);
            if id == &self.me || p.state != ParticipantState::Active {
                continue;
            }
            if news {
                let _ = self.events.send(PresenceEvent::Joined {
                    participant: id.clone(),
                    epoch: p.epoch,
                });
            }
            if self.judge.is_local(p) {
                self.watch_exit(id, p);
            }
        }
        self.known = data
            .participants
            .iter()
            .map(|(id, p)| (id.clone(), (p.epoch, p.state)))
            .collect();
        true
    }

    fn expire_stale(&mut self, data: &LedgerData, stale: &[ParticipantId]) {
        for id in stale {
            if let Some(p) = data.participants.get(id)
                && p.state == ParticipantState::Active
            {
                let _ = self.events.send(PresenceEvent::Expired {
                    participant: id.clone(),
                    epoch: p.epoch,
                    reason: "heartbeat stale".into(),
                });
            }
        }
    }
}

impl Drop for FileRoster {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}
