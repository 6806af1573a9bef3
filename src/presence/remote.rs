//! Presence through a ledger server: heartbeats kept by the server beside the document
//! and stamped with its clock, ages judged by that clock, expired participants pushed on
//! the server's event stream. Peers on this machine are still watched through a pidfd
//! (the file presence's roster), which sees a killed peer sooner than any threshold.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, Participant};
use crate::store::remote::{RemoteStore, ServerAges};

use super::file::FilePresence;
use super::judge::{Ages, Judge, SelfIdentity};
use super::{KeepAlive, Presence, PresenceEvent, PresenceEvents, Roster};

/// Presence of the participants of a remote ledger.
#[derive(Debug)]
pub struct RemotePresence {
    local: FilePresence,
    judge: Arc<Judge>,
    store: RemoteStore,
    ages: Arc<ServerAges>,
}

impl RemotePresence {
    pub(crate) fn new(
        store: RemoteStore,
        identity: SelfIdentity,
        stale_threshold: Duration,
        max_pause: Duration,
        clock: SharedClock,
    ) -> Self {
        let ages = store.server_ages();
        ages.set_stale_threshold(stale_threshold);
        let judge = Judge::with_server_ages(
            identity,
            stale_threshold,
            max_pause,
            clock,
            Some(ages.clone()),
        );
        Self {
            local: FilePresence::with_judge(judge.clone()),
            judge,
            store,
            ages,
        }
    }
}

impl Presence for RemotePresence {
    fn stale_threshold(&self) -> Duration {
        self.local.stale_threshold()
    }

    fn set_stale_threshold(&self, threshold: Duration) {
        self.local.set_stale_threshold(threshold);
        self.ages.set_stale_threshold(threshold);
    }

    fn participant_alive(&self, p: &Participant) -> bool {
        self.local.participant_alive(p)
    }

    fn process_running(&self, p: &Participant) -> bool {
        self.local.process_running(p)
    }

    fn is_live(&self, data: &LedgerData, id: &ParticipantId) -> bool {
        self.local.is_live(data, id)
    }

    fn unregistered_alive(&self, data: &LedgerData) -> bool {
        self.local.unregistered_alive(data)
    }

    fn ages(&self, data: &LedgerData, me: &ParticipantId) -> Ages {
        self.local.ages(data, me)
    }

    fn follow(&self, me: ParticipantId) -> (Box<dyn Roster>, PresenceEvents) {
        let (inner, mut inner_events) = self.local.follow(me.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let forward = tx.clone();
        let local = tokio::spawn(async move {
            while let Some(event) = inner_events.recv().await {
                if forward.send(event).is_err() {
                    return;
                }
            }
        });
        let roster = RemoteRoster {
            me,
            judge: self.judge.clone(),
            latest: Arc::new(Mutex::new(None)),
            inner,
            ages: self.ages.clone(),
            events: tx,
            following: None,
            tasks: vec![local],
        };
        (Box::new(roster), rx)
    }

    fn keep_alive(&self, op: &OperationId, me: &ParticipantId, epoch: u64) -> Option<KeepAlive> {
        let store = self.store.clone();
        let (op, me) = (op.clone(), me.clone());
        Some(Box::pin(async move {
            Ok(store.beat(&op, &me, epoch).await?.data)
        }))
    }
}

/// The file roster for peers on this machine, plus the server's expired participants.
struct RemoteRoster {
    /// This participant: never expired by its own roster.
    me: ParticipantId,
    judge: Arc<Judge>,
    /// The operation as last seen: whether a pause excuses an expired participant.
    latest: Arc<Mutex<Option<LedgerData>>>,
    inner: Box<dyn Roster>,
    ages: Arc<ServerAges>,
    events: mpsc::UnboundedSender<PresenceEvent>,
    /// The operation whose server events are forwarded (known from the first view).
    following: Option<OperationId>,
    tasks: Vec<JoinHandle<()>>,
}

impl RemoteRoster {
    fn follow_server(&mut self, op: &OperationId) {
        if self.following.as_ref() == Some(op) {
            return;
        }
        self.following = Some(op.clone());
        let mut expired = self.ages.subscribe_expired(op);
        let events = self.events.clone();
        let me = self.me.clone();
        let (judge, latest) = (self.judge.clone(), self.latest.clone());
        self.tasks.push(tokio::spawn(async move {
            while let Some(e) = expired.recv().await {
                // Paused by job control: excused as the judge excuses it (the server
                // knows ages, not pauses).
                let excused = latest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .and_then(|d| d.participants.get(&e.participant))
                    .is_some_and(|p| judge.pause_excuses(p));
                if e.participant == me || excused {
                    continue;
                }
                let event = PresenceEvent::Expired {
                    participant: e.participant,
                    epoch: e.epoch,
                    reason: format!(
                        "heartbeat stale by the server's clock ({} ms old)",
                        e.age_ms
                    ),
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        }));
    }
}

impl Roster for RemoteRoster {
    fn see(&mut self, data: &LedgerData) -> bool {
        self.follow_server(&data.operation_id);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(data.clone());
        self.inner.see(data)
    }

    fn expire_stale(&mut self, data: &LedgerData, stale: &[ParticipantId]) {
        self.inner.expire_stale(data, stale);
    }
}

impl Drop for RemoteRoster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
