//! The ledger API: [`Ledger`] connects to a store; operations are created or joined as
//! [`Operation`] sessions; work is tracked as [`Call`]s and [`SpawnedCall`]s.
//!
//! Everything here is written against the [`Store`] trait, so it behaves the same on
//! every backend.

mod call;
mod callbacks;
mod connect;
pub(crate) mod core;
mod crash;
mod discover;
mod effects;
mod exec;
mod failure;
mod follow;
mod group_commit;
mod heartbeat;
mod inspect;
mod listing;
mod operation;
mod panic;
mod recovery;
mod recovery_proof;
mod shared;
mod signals;
mod spawned;
mod sync;
mod temps;
mod watching;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::{SharedClock, Timestamp};
use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId, ParticipantId};
use crate::model::{LedgerData, LogLevel, Participant, ParticipantState};
use crate::presence::{FilePresence, Presence, PresenceEvents, RemotePresence, SelfIdentity};
pub use crate::store::OperationSummary;
use crate::store::remote::RemoteStore;
use crate::store::{FileStore, Store};

pub use crate::presence::{HeartbeatError, HeartbeatErrorType, HeartbeatResult};
pub use call::{Call, CallOptions};
pub use callbacks::{
    BoxFuture, CallCallback, LedgerCallback, OperationCallback, OperationFailedInfo,
};
pub use connect::{
    AUTO, Connect, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_PAUSE, DEFAULT_STALE_THRESHOLD,
    ENV_LEDGER_TOKEN,
};
pub use discover::{Discovery, Found, discover};
pub use exec::{
    Decoder, ENV_CALL, ENV_LEDGER_DIR, ENV_LEDGER_ETCD, ENV_LEDGER_ETCD_PREFIX, ENV_LEDGER_URL,
    ENV_OPERATION, ENV_PARTICIPANT, ExecWorker, RunningFn, WorkerResult, exit_code, process_record,
};
pub use follow::{FollowEnd, Followed, LogFollower};
pub use heartbeat::HeartbeatOptions;
pub use listing::ListedOperation;
pub use operation::Operation;
pub use recovery::{LeftAlone, PlannedRecovery, Recovered, RecoveryReport};
pub use recovery_proof::RecoveryMode;
pub use spawned::{CallContext, CallStatus, SpawnedCall, TrackedCall};
pub use sync::{SyncOptions, SyncResult, WaitOptions};

pub(crate) use connect::{LedgerConfig, RemoteTarget, Target};
use core::registry::{Holder, Joining};
use shared::OpShared;

pub(crate) struct LedgerInner {
    pub store: Arc<dyn Store>,
    pub config: LedgerConfig,
    pub callback: LedgerCallback,
    pub clock: SharedClock,
    pub identity: SelfIdentity,
    /// Liveness of the participants: the one stale threshold and every judgement.
    pub presence: Arc<dyn Presence>,
    operations: Mutex<HashMap<OperationId, Arc<OpShared>>>,
    /// What `Connect::recover_abandoned` recovered.
    connect_recovery: Mutex<Option<RecoveryReport>>,
}

impl LedgerInner {
    /// Drop an operation from this ledger's registry (after leave, complete, archive).
    pub fn forget(&self, op: &OperationId) {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(op);
    }

    /// Append a line to an operation's log and hand it to the log-line callback.
    pub async fn log(&self, op: &OperationId, level: LogLevel, message: &str) -> Result<()> {
        self.log_at(op, None, level, message).await
    }

    /// [`log`](Self::log), stamped `at` (now when `None`).
    pub(crate) async fn log_at(
        &self,
        op: &OperationId,
        at: Option<crate::clock::Timestamp>,
        level: LogLevel,
        message: &str,
    ) -> Result<()> {
        let line = self.log_line_text_at(at, level, message);
        let result = self
            .store
            .append_log(op, crate::store::LogKind::Main, &line)
            .await;
        self.report_line(&line);
        result
    }

    /// A log line as written, stamped `at` (now when `None`).
    pub(crate) fn log_line_text_at(
        &self,
        at: Option<crate::clock::Timestamp>,
        level: LogLevel,
        message: &str,
    ) -> String {
        let at = at.unwrap_or_else(|| self.clock.now());
        crate::model::log_line(&at, level, message)
    }

    /// Hand a line written to an operation's log to the log-line callback.
    pub fn report_line(&self, line: &str) {
        if let Some(f) = &self.callback.on_log_line {
            panic::call_quietly("on_log_line", || f(line));
        }
    }

    fn registered(&self, op: &OperationId) -> Option<Arc<OpShared>> {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(op)
            .cloned()
    }
}

/// Registrations under the joining id judged in one join before it gives up (each is a
/// different process that took the id meanwhile).
const JOIN_VERDICTS: usize = 8;

/// Options of `create_operation` and `join_operation`.
#[derive(Clone, Default)]
pub struct OperationOptions {
    pub description: Option<String>,
    pub callback: OperationCallback,
    /// Create with this id instead of a generated one.
    pub operation_id: Option<OperationId>,
    /// The call (of another participant) whose exec worker started this process.
    pub spawned_by: Option<CallId>,
}

impl OperationOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    pub fn callback(mut self, c: OperationCallback) -> Self {
        self.callback = c;
        self
    }

    pub fn operation_id(mut self, id: OperationId) -> Self {
        self.operation_id = Some(id);
        self
    }

    pub fn spawned_by(mut self, call: CallId) -> Self {
        self.spawned_by = Some(call);
        self
    }
}

/// A connection to a ledger for one participant.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<LedgerInner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("participant", &self.inner.config.participant)
            .field("store", &self.inner.store)
            .finish()
    }
}

impl Ledger {
    /// Connect to a ledger.
    pub async fn connect(connect: Connect) -> Result<Ledger> {
        #[cfg(feature = "etcd")]
        let mut etcd = None;
        let mut remote_token = None;
        let mut remote_store = None;
        let store: Arc<dyn Store> = match connect.target {
            Target::Local { dir, create: true } => {
                Arc::new(FileStore::open(dir, connect.file_options)?)
            }
            Target::Local { dir, create: false } => {
                Arc::new(FileStore::open_existing(dir, connect.file_options)?)
            }
            Target::Store(store) => store,
            #[cfg(feature = "etcd")]
            Target::Etcd { endpoints, options } => {
                let store = crate::store::EtcdStore::connect(&endpoints, options).await?;
                etcd = Some((store.cluster().clone(), store.keys().clone()));
                Arc::new(store)
            }
            Target::Remote(remote) => {
                let (url, found_token) = match remote {
                    RemoteTarget::Url(url) => (url, None),
                    RemoteTarget::Discover(d) => {
                        let found = discover::discover(&d).await?;
                        (found.url, found.token)
                    }
                };
                remote_token = connect.token.clone().or(found_token);
                let store = RemoteStore::new(&url, remote_token.clone())?;
                remote_store = Some(store.clone());
                Arc::new(store)
            }
        };
        let pid = connect.pid.unwrap_or(std::process::id() as i32);
        let participant = match connect.participant {
            Some(p) => p,
            None => ParticipantId::parse(format!("participant-{pid}"))?,
        };
        let config = LedgerConfig {
            participant,
            pid,
            heartbeat_interval: connect.heartbeat_interval,
            heartbeat_jitter: connect.heartbeat_jitter,
            cleanup_wait: connect
                .cleanup_wait
                .unwrap_or(connect.heartbeat_interval * 2),
            worker_grace: connect.worker_grace,
            remote_token,
        };
        let mut identity = SelfIdentity::current();
        if let Some(host) = connect.host {
            identity.host = host;
        }
        let presence: Arc<dyn Presence> = match remote_store {
            Some(store) => Arc::new(RemotePresence::new(
                store,
                identity.clone(),
                connect.stale_threshold,
                connect.max_pause,
                connect.clock.clone(),
            )),
            None => Arc::new(FilePresence::with_identity(
                identity.clone(),
                connect.stale_threshold,
                connect.max_pause,
                connect.clock.clone(),
            )),
        };
        #[cfg(feature = "etcd")]
        let presence: Arc<dyn Presence> = match etcd {
            Some((cluster, keys)) => Arc::new(crate::presence::EtcdPresence::new(
                cluster,
                keys,
                identity.clone(),
                connect.stale_threshold,
                connect.max_pause,
                connect.clock.clone(),
            )),
            None => presence,
        };
        let ledger = Ledger {
            inner: Arc::new(LedgerInner {
                store,
                config,
                callback: connect.callback,
                clock: connect.clock,
                identity,
                presence,
                operations: Mutex::new(HashMap::new()),
                connect_recovery: Mutex::new(None),
            }),
        };
        if connect.recover_abandoned {
            let report = ledger.recover_automatically().await?;
            *ledger
                .inner
                .connect_recovery
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(report);
        }
        Ok(ledger)
    }

    /// What recovery did when connecting with `Connect::recover_abandoned(true)`; `None`
    /// without it.
    pub fn connect_recovery(&self) -> Option<RecoveryReport> {
        self.inner
            .connect_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn participant_id(&self) -> &ParticipantId {
        &self.inner.config.participant
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    fn registration(&self, now: Timestamp, epoch: u64, spawned_by: Option<CallId>) -> Participant {
        let id = &self.inner.identity;
        Participant {
            pid: self.inner.config.pid,
            start_ticks: if self.inner.config.pid == std::process::id() as i32 {
                id.start_ticks
            } else {
                None
            },
            host: id.host.clone(),
            boot_id: id.boot_id.clone(),
            pid_namespace: id.pid_ns,
            uid: Some(id.uid),
            epoch,
            last_heartbeat: now,
            joined_at: now,
            state: ParticipantState::Active,
            spawned_by,
            paused_at: None,
        }
    }

    /// Create an operation with this participant as initiator; its heartbeat starts.
    ///
    /// Only the initiator may complete the operation, so if this process dies before it
    /// does, the operation fails (whatever `fail_on_crash` its calls had): a surviving
    /// participant that detects the death coordinates the cleanup, and without one,
    /// recovery (`Ledger::recover`, `tom-ledger recover`) archives it as failed.
    pub async fn create_operation(&self, options: OperationOptions) -> Result<Operation> {
        let now = self.inner.clock.now();
        let me = self.inner.config.participant.clone();
        let id = match options.operation_id.clone() {
            Some(id) => id,
            None => OperationId::generate(&me, now),
        };
        let mut data = LedgerData::new(id.clone(), me.clone(), now);
        data.description = options.description.clone();
        core::registry::register_initiator(
            &mut data,
            self.registration(now, 1, options.spawned_by.clone()),
        );
        self.inner.store.create(&data).await?;
        let (shared, presence) = OpShared::new(self.inner.clone(), id.clone(), true, now, 1, data);
        let op = self.activate(shared, presence, options.callback)?;
        let description = options.description.as_deref().unwrap_or("");
        op.shared
            .log_quietly(
                LogLevel::Info,
                &format!("OPERATION_CREATED initiator={me} description={description}"),
            )
            .await;
        Ok(op)
    }

    /// Join an existing operation. Each join is a new session; the first join of this
    /// ledger registers the participant and starts its heartbeat.
    pub async fn join_operation(
        &self,
        id: &OperationId,
        options: OperationOptions,
    ) -> Result<Operation> {
        if let Some(shared) = self.inner.registered(id) {
            let session = shared.open_session(options.callback);
            return Ok(Operation::from_shared(shared, session));
        }
        let now = self.inner.clock.now();
        let me = self.inner.config.participant.clone();
        let my_pid = self.inner.config.pid;
        let registration = self.registration(now, 0, options.spawned_by.clone());
        // Whether another process holding this id lives is judged outside the change, and
        // only when the change asks for it (see `core::registry::join`).
        let mut holder = Holder::Unknown;
        let mut verdicts = 0;
        let (data, epoch, initiator) = loop {
            let mut joining = None;
            let result = self
                .inner
                .store
                .modify(id, &mut |data: &mut LedgerData| {
                    let step = core::registry::join(data, &me, &registration, &holder, now)?;
                    let judge = matches!(step, Joining::Judge(_));
                    joining = Some(step);
                    if judge {
                        // Nothing changed: give the write up and judge first.
                        return Err(Error::invalid("join", "needs a liveness verdict"));
                    }
                    Ok(())
                })
                .await;
            match (joining, result) {
                (Some(Joining::Judge(existing)), _) => {
                    verdicts += 1;
                    if verdicts > JOIN_VERDICTS {
                        return Err(Error::ParticipantInUse {
                            operation: id.clone(),
                            participant: me.clone(),
                            pid: existing.pid,
                        });
                    }
                    holder = Holder::Judged {
                        pid: existing.pid,
                        epoch: existing.epoch,
                        alive: self.inner.presence.participant_alive(&existing),
                    };
                }
                (Some(Joining::Joined { epoch, initiator }), Ok(data)) => {
                    break (data, epoch, initiator);
                }
                (_, Err(e)) => return Err(e),
                (None, Ok(_)) => {
                    return Err(Error::invalid(
                        format!("operation `{id}`"),
                        "the store reported a change that never ran",
                    ));
                }
            }
        };
        let (shared, presence) = OpShared::new(
            self.inner.clone(),
            id.clone(),
            initiator,
            now,
            epoch,
            data.clone(),
        );
        let op = self.activate(shared, presence, options.callback)?;
        op.shared
            .log_quietly(
                LogLevel::Info,
                &format!("PARTICIPANT_JOINED participant={me} pid={my_pid} epoch={epoch}"),
            )
            .await;
        op.shared.observe(&data);
        Ok(op)
    }

    /// Register, watch and heartbeat a freshly created or joined operation.
    fn activate(
        &self,
        shared: Arc<OpShared>,
        presence: PresenceEvents,
        callback: OperationCallback,
    ) -> Result<Operation> {
        shared.local().heartbeat_callback = callback.clone();
        let session = shared.open_session(callback.clone());
        shared.start_watching()?;
        crash::follow_presence(&shared, presence);
        heartbeat::start(
            &shared,
            HeartbeatOptions {
                interval: self.inner.config.heartbeat_interval,
                jitter: self.inner.config.heartbeat_jitter,
                callback,
            },
        );
        signals::register_signal_cleanup(&shared);
        self.inner
            .operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shared.id.clone(), shared.clone());
        Ok(Operation::from_shared(shared, session))
    }

    /// Live and archived operations of the ledger, in one listing of the store; a live
    /// one that cannot be read fails the call (see
    /// [`list_all_operations`](Self::list_all_operations) to list it with its error).
    pub async fn list_operations(&self) -> Result<Vec<OperationSummary>> {
        let mut out = Vec::new();
        for entry in self.inner.store.list_summaries().await? {
            match entry.summary {
                Ok(summary) => out.push(summary),
                Err(e) if !entry.archived => return Err(e),
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// Set the abort flag of an operation without joining it (as `tom-ledger abort` does).
    /// Participants on this machine learn of it at once through change notification.
    pub async fn abort_operation(&self, op: &OperationId) -> Result<()> {
        let now = self.inner.clock.now();
        self.inner
            .store
            .modify(op, &mut |data: &mut LedgerData| {
                core::registry::abort_from_outside(data, now)
            })
            .await?;
        let message = format!("ABORT_REQUESTED by={}", self.inner.config.participant);
        self.inner.log(op, LogLevel::Warning, &message).await
    }

    /// The operation's data, live or archived; the flag is true when it came from the
    /// archive.
    pub async fn read_operation(&self, op: &OperationId) -> Result<(LedgerData, bool)> {
        match self.inner.store.read(op).await {
            Ok(data) => Ok((data, false)),
            Err(Error::OperationNotFound(_)) => {
                Ok((self.inner.store.read_archived(op).await?, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a registered participant of `data` is alive, judged as crash detection
    /// judges it (pid and start time on this machine, heartbeat age elsewhere).
    pub fn is_participant_alive(&self, data: &LedgerData, participant: &ParticipantId) -> bool {
        self.inner.presence.is_live(data, participant)
    }

    /// Record in every live operation of this ledger that this participant is stopped by
    /// job control (`true`, just before the process stops) or runs again (`false`, just
    /// after; it counts as a heartbeat). While paused, peers on this machine judge it by
    /// its pid only, and peers elsewhere excuse it for [`Connect::max_pause`]. The first
    /// error is returned after every operation was tried; an operation that has ended
    /// is no error.
    pub async fn set_paused(&self, paused: bool) -> Result<()> {
        let all: Vec<Arc<OpShared>> = self
            .inner
            .operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut first = None;
        for shared in all {
            if let Err(e) = signals::record_pause(&shared, paused).await
                && !failure::is_gone(&e)
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Stop every heartbeat and watch of this ledger. Operations stay as they are, except
    /// that a failure cleanup this participant coordinates is finished first (bounded).
    /// Returns once no heartbeat of this ledger can write any more.
    pub async fn dispose(&self) {
        let all: Vec<Arc<OpShared>> = self
            .inner
            .operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for shared in all {
            shared.finish_coordination().await;
            for task in shared.stop_tasks() {
                let _ = task.await;
            }
        }
    }
}
