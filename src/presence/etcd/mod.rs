//! Presence on etcd: each participant keeps a key bound to a lease, so etcd's clock,
//! not the participants', says who is alive.
//!
//! - One lease per connection, whose TTL is the stale threshold, kept alive by a task of
//!   the connection every third of the TTL; each operation the participant takes part in
//!   has a key `{prefix}presence/{op}/{participant}` bound to it, naming the epoch and the
//!   process. A process that dies (SIGKILL, a lost machine) stops renewing; etcd deletes
//!   its keys once the TTL has run out by etcd's own clock. A lease found gone (the
//!   process was stopped longer than the TTL) is granted anew and the keys put again:
//!   the peers have declared it crashed meanwhile, and fencing refuses its writes.
//! - Each roster watches its operation's presence keys: a deletion of a registered
//!   participant's key is [`PresenceEvent::Expired`] (a participant that left in order is
//!   no crash: the crash declaration re-reads the registry). A key that never appeared
//!   proves nothing.
//! - Judgement: a participant whose key is present is alive, whatever the heartbeat ages
//!   in the document say (two machines' clocks never make a false crash). The local
//!   proof rules stay: peers on this host, boot and PID namespace are judged and watched
//!   by pid (a SIGKILLed local peer is seen at once), and only they are ever signalled.
//!   Participants with no key (operations of the original, records from elsewhere) are
//!   judged by heartbeat age as on the file store, once one stale threshold has passed
//!   since this process first saw their registration (a joiner puts its key just after
//!   its join: `grace.rs`). What etcd says is input: a present
//!   key only keeps a participant alive (it never leads to a deletion or a signal), and
//!   an expired one leads to a crash declaration, whose effects keep their own proofs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::future::BoxFuture;
use crate::ids::{OperationId, ParticipantId};
use crate::model::{LedgerData, Participant, ParticipantState};
use crate::process::exited;
use crate::store::etcd::{Cluster, Keys};

mod follower;
mod grace;
mod lease;

use follower::KeyFollower;
use grace::Grace;
use lease::{keep_lease, register, unregister};

use super::judge::{Ages, Judge, SelfIdentity, identity_of};
use super::{Presence, PresenceEvent, PresenceEvents, Roster};

/// The smallest TTL asked for (etcd rounds smaller ones up anyway).
const MIN_TTL_SECS: i64 = 1;
/// How long a beat asks etcd to confirm a stale judgement before the ages stand.
const CONFIRM_WITHIN: Duration = Duration::from_secs(2);
/// Pause before a broken presence watch is taken up again.
const RESUME_PAUSE: Duration = Duration::from_millis(100);

/// What a presence key holds: whose registration it keeps alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    epoch: u64,
    host: String,
    pid: i32,
    start_ticks: Option<u64>,
}

impl Marker {
    fn is_of(&self, p: &Participant) -> bool {
        self.epoch == p.epoch
            && self.host == p.host
            && self.pid == p.pid
            && (self.start_ticks.is_none() || self.start_ticks == p.start_ticks)
    }
}

type Markers = HashMap<OperationId, HashMap<ParticipantId, Marker>>;

/// The lease of this connection and the keys bound to it.
#[derive(Default)]
struct LeaseState {
    id: Option<i64>,
    keys: BTreeMap<String, Vec<u8>>,
}

struct Shared {
    judge: Arc<Judge>,
    cluster: Cluster,
    keys: Keys,
    /// Presence keys as the watches of this connection last saw them.
    markers: Mutex<Markers>,
    /// Registrations not yet judged by heartbeat age while their key may be on its way.
    grace: Grace,
    lease: tokio::sync::Mutex<LeaseState>,
}

/// Lease-bound presence on an etcd cluster; see the module notes.
pub struct EtcdPresence {
    shared: Arc<Shared>,
    keeper: JoinHandle<()>,
}

impl std::fmt::Debug for EtcdPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdPresence")
            .field("cluster", &self.shared.cluster)
            .finish()
    }
}

impl EtcdPresence {
    /// Presence for this process on the ledger `keys` of `cluster`, judged with the
    /// given identity (its host, boot and PID namespace), stale threshold (the lease's
    /// TTL), longest excused pause and clock. Must be called within a tokio runtime.
    pub(crate) fn new(
        cluster: Cluster,
        keys: Keys,
        identity: SelfIdentity,
        stale_threshold: Duration,
        max_pause: Duration,
        clock: SharedClock,
    ) -> Self {
        let shared = Arc::new(Shared {
            judge: Judge::new(identity, stale_threshold, max_pause, clock),
            cluster,
            keys,
            markers: Mutex::default(),
            grace: Grace::default(),
            lease: tokio::sync::Mutex::default(),
        });
        let keeper = tokio::spawn(keep_lease(Arc::downgrade(&shared)));
        Self { shared, keeper }
    }

    fn markers(&self) -> std::sync::MutexGuard<'_, Markers> {
        self.shared
            .markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether etcd holds a live key for this registration (of any operation).
    fn leased(&self, p: &Participant) -> bool {
        self.markers()
            .values()
            .any(|ps| ps.values().any(|m| m.is_of(p)))
    }

    /// Whether a registration elsewhere was first seen less than a stale threshold
    /// ago: its key may still be on its way (see `grace.rs`).
    fn in_grace(&self, p: &Participant) -> bool {
        !self.shared.judge.is_local(p)
            && self
                .shared
                .grace
                .within(p, self.shared.judge.stale_threshold())
    }

    /// Whether etcd holds a live key for `id` in `data`'s operation, at its epoch.
    fn leased_in(&self, data: &LedgerData, id: &ParticipantId) -> bool {
        let Some(p) = data.participants.get(id) else {
            return false;
        };
        self.markers()
            .get(&data.operation_id)
            .and_then(|ps| ps.get(id))
            .is_some_and(|m| m.is_of(p))
    }
}

impl Drop for EtcdPresence {
    fn drop(&mut self) {
        self.keeper.abort();
        // Give the lease back at once, so peers see this participant gone without
        // waiting for the TTL (best effort: the runtime may be shutting down).
        let shared = self.shared.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let id = shared.lease.lock().await.id.take();
                if let Some(id) = id {
                    let _ = shared
                        .cluster
                        .run_within(Duration::from_secs(2), |mut c| async move {
                            c.lease_revoke(id).await
                        })
                        .await;
                }
            });
        }
    }
}

impl Presence for EtcdPresence {
    fn stale_threshold(&self) -> Duration {
        self.shared.judge.stale_threshold()
    }

    fn set_stale_threshold(&self, threshold: Duration) {
        self.shared.judge.set_stale_threshold(threshold);
    }

    fn participant_alive(&self, p: &Participant) -> bool {
        p.state == ParticipantState::Active && self.process_running(p)
    }

    fn process_running(&self, p: &Participant) -> bool {
        if self.shared.judge.is_local(p) {
            return self.shared.judge.process_running(p);
        }
        self.leased(p) || self.in_grace(p) || self.shared.judge.process_running(p)
    }

    fn is_live(&self, data: &LedgerData, id: &ParticipantId) -> bool {
        match data.participants.get(id) {
            Some(p) => self.participant_alive(p),
            None => self.shared.judge.is_live(data, id),
        }
    }

    fn unregistered_alive(&self, data: &LedgerData) -> bool {
        self.shared.judge.unregistered_alive(data)
    }

    fn ages(&self, data: &LedgerData, me: &ParticipantId) -> Ages {
        let mut ages = self.shared.judge.ages(data, me);
        ages.stale.retain(|id| {
            !self.leased_in(data, id)
                && !data.participants.get(id).is_some_and(|p| self.in_grace(p))
        });
        ages
    }

    /// Stale by age and without a marker in this connection's view: ask etcd for the
    /// operation's keys, since the view follows a watch that may not have caught up
    /// with a registration yet. Unreachable etcd: the ages stand.
    fn confirm_stale<'a>(
        &'a self,
        data: &'a LedgerData,
        stale: Vec<ParticipantId>,
    ) -> BoxFuture<'a, Vec<ParticipantId>> {
        Box::pin(async move {
            let prefix = self.shared.keys.presence(&data.operation_id);
            let listed = self
                .shared
                .cluster
                .run_within(CONFIRM_WITHIN, |mut c| {
                    let prefix = prefix.clone();
                    async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
                })
                .await;
            let Ok(listed) = listed else { return stale };
            let markers: HashMap<&[u8], Marker> = listed
                .kvs()
                .iter()
                .filter_map(|kv| Some((kv.key(), serde_json::from_slice(kv.value()).ok()?)))
                .collect();
            stale
                .into_iter()
                .filter(|id| {
                    let key = format!("{prefix}{id}");
                    let held = markers.get(key.as_bytes());
                    !held
                        .zip(data.participants.get(id))
                        .is_some_and(|(m, p)| m.is_of(p))
                })
                .collect()
        })
    }

    fn follow(&self, me: ParticipantId) -> (Box<dyn Roster>, PresenceEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        let roster = EtcdRoster {
            shared: self.shared.clone(),
            me,
            op: None,
            registered_epoch: None,
            known: Arc::default(),
            watched: HashSet::new(),
            tasks: Vec::new(),
            events: tx,
        };
        (Box::new(roster), rx)
    }
}

type Registry = Arc<Mutex<BTreeMap<ParticipantId, (u64, ParticipantState)>>>;

/// The participants of one operation as one participant follows them on etcd.
struct EtcdRoster {
    shared: Arc<Shared>,
    me: ParticipantId,
    op: Option<OperationId>,
    /// The epoch this participant's key was put for.
    registered_epoch: Option<u64>,
    /// The registry as last seen: id -> (epoch, state).
    known: Registry,
    /// Local peers whose exit is watched, by id and epoch.
    watched: HashSet<(ParticipantId, u64)>,
    tasks: Vec<JoinHandle<()>>,
    events: mpsc::UnboundedSender<PresenceEvent>,
}

impl EtcdRoster {
    fn key_of(&self, op: &OperationId) -> String {
        format!("{}{}", self.shared.keys.presence(op), self.me)
    }

    /// Watch a local peer's process; its exit is announced as expired.
    fn watch_exit(&mut self, id: &ParticipantId, p: &Participant) {
        let Some(identity) = identity_of(p) else {
            return;
        };
        if !self.watched.insert((id.clone(), p.epoch)) {
            return;
        }
        let events = self.events.clone();
        let participant = id.clone();
        let epoch = p.epoch;
        self.tasks.push(tokio::spawn(async move {
            exited(&identity).await;
            let _ = events.send(PresenceEvent::Expired {
                participant,
                epoch,
                reason: format!("process {} exited", identity.pid),
            });
        }));
    }

    /// The first view: start following the operation's presence keys.
    fn start(&mut self, op: &OperationId) {
        self.op = Some(op.clone());
        let follower = KeyFollower {
            shared: self.shared.clone(),
            op: op.clone(),
            me: self.me.clone(),
            known: self.known.clone(),
            events: self.events.clone(),
        };
        self.tasks.push(tokio::spawn(follower.run()));
    }
}

impl Roster for EtcdRoster {
    fn see(&mut self, data: &LedgerData) -> bool {
        if self.op.is_none() {
            self.start(&data.operation_id);
        }
        if let Some(mine) = data.participants.get(&self.me)
            && mine.state == ParticipantState::Active
            && self.registered_epoch != Some(mine.epoch)
        {
            self.registered_epoch = Some(mine.epoch);
            let marker = Marker {
                epoch: mine.epoch,
                host: mine.host.clone(),
                pid: mine.pid,
                start_ticks: mine.start_ticks,
            };
            let key = self.key_of(&data.operation_id);
            tokio::spawn(register(self.shared.clone(), key, marker));
        }
        let changed = {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.len() != data.participants.len()
                || known
                    .iter()
                    .zip(&data.participants)
                    .any(|((id, (epoch, state)), (pid, p))| {
                        id != pid || *epoch != p.epoch || *state != p.state
                    })
        };
        if !changed {
            return false;
        }
        let previous = self.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (id, p) in &data.participants {
            if id == &self.me || p.state != ParticipantState::Active {
                continue;
            }
            if previous.get(id).is_none_or(|(epoch, _)| *epoch != p.epoch) {
                let _ = self.events.send(PresenceEvent::Joined {
                    participant: id.clone(),
                    epoch: p.epoch,
                });
            }
            if self.shared.judge.is_local(p) {
                self.watch_exit(id, p);
            } else {
                self.shared.grace.saw(p);
            }
        }
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = data
            .participants
            .iter()
            .map(|(id, p)| (id.clone(), (p.epoch, p.state)))
            .collect();
        true
    }

    /// Heartbeat-age judgements only expire participants whose lease etcd does not
    /// hold: one whose key is present is alive by etcd's clock.
    fn expire_stale(&mut self, data: &LedgerData, stale: &[ParticipantId]) {
        let leased: Vec<bool> = {
            let markers = self
                .shared
                .markers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let of_op = markers.get(&data.operation_id);
            stale
                .iter()
                .map(|id| {
                    let p = data.participants.get(id);
                    of_op
                        .and_then(|ps| ps.get(id))
                        .zip(p)
                        .is_some_and(|(m, p)| m.is_of(p))
                })
                .collect()
        };
        for (id, leased) in stale.iter().zip(leased) {
            if leased {
                continue;
            }
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

impl Drop for EtcdRoster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(op) = &self.op {
            self.shared
                .markers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(op);
            if self.registered_epoch.is_some()
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                runtime.spawn(unregister(self.shared.clone(), self.key_of(op)));
            }
        }
    }
}
