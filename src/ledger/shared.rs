//! What all sessions of one operation share inside one process: the participant's
//! registration (epoch), open calls, local temp resources, the abort and failure signals,
//! and the background tasks (heartbeat registration, change watch, presence roster).
//!
//! Every write of this participant goes through [`OpShared::modify`], which refuses the
//! write with `Fenced` once the participant was declared crashed or re-registered
//! elsewhere (the epoch pattern), and counts as a heartbeat.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId};
use crate::model::{FrameChange, FrameStep, LedgerData, LogLevel, ParticipantState};
use crate::presence::{PresenceEvents, Registration, Roster};
use crate::revision::Revision;

use super::LedgerInner;
use super::callbacks::{BoxFuture, OperationCallback, OperationFailedInfo};
use super::group_commit::Commits;
use super::operation::Operation;
use super::spawned::CallPhase;
use super::watcher::OwnWrites;

/// A call of this process that has a frame in the ledger.
/// What a write is: a heartbeat, or a change with the log lines that report it.
enum WriteNow<'a> {
    HeartbeatOnly,
    Change(&'a [String]),
    /// A change of this participant's frames, also described as data (see
    /// [`Store::modify_frame`](crate::store::Store::modify_frame)), with its lines.
    Frame(&'a FrameStep, &'a [String]),
}

pub(crate) struct ActiveCall {
    pub session: u64,
    /// Set for spawned calls: cancels their work.
    pub cancel: Option<CancellationToken>,
    /// Says when a spawned call has finished ([`CallPhase::Done`]).
    pub done: Option<watch::Receiver<CallPhase>>,
    pub on_cleanup: Option<Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>>,
    pub on_operation_failed:
        Option<Arc<dyn Fn(OperationFailedInfo) -> BoxFuture<'static, ()> + Send + Sync>>,
}

/// Mutable local state, behind one mutex that is never held across an await.
pub(crate) struct Local {
    pub sessions: BTreeMap<u64, OperationCallback>,
    pub calls: HashMap<CallId, ActiveCall>,
    pub temps: BTreeSet<PathBuf>,
    /// This participant's newest view of the operation (shared: a write that needs
    /// nothing back hands its data over without a copy).
    pub cached: Option<Arc<LedgerData>>,
    /// Grace between SIGTERM and SIGKILL for this operation's workers.
    pub worker_grace: Option<Duration>,
    pub heartbeat: Option<Registration>,
    pub heartbeat_callback: OperationCallback,
    pub watcher: Option<JoinHandle<()>>,
    /// This participant's cleanup after a failure, once started.
    pub self_cleanup: Option<JoinHandle<()>>,
    /// The cleanup this participant coordinates, once started: leaving or disposing
    /// waits for it (bounded), so the operation is archived before the process exits.
    pub coordination: Option<JoinHandle<()>>,
    /// The other participants as this one follows them (presence); shown every fresh
    /// view, it announces the expired ones to the crash declaration.
    pub roster: Box<dyn Roster>,
    /// Registrations with the signal cleanup handler.
    pub cleanup_ids: Vec<crate::cleanup::CleanupId>,
    /// Completed, left or archived: no more background work.
    pub ended: bool,
    /// Declared crashed by others (seen in the ledger or refused a write): every later
    /// write of this participant, log lines included, is refused.
    pub fenced: bool,
}

pub(crate) struct OpShared {
    pub ledger: Arc<LedgerInner>,
    pub id: OperationId,
    pub is_initiator: bool,
    /// Creation time for the initiator, local join time for a joiner.
    pub start_time: Timestamp,
    pub started: Instant,
    /// Registration epoch of this participant in the operation.
    pub epoch: u64,
    local: Mutex<Local>,
    /// Writes waiting for the next group write (see `group_commit.rs`).
    pub(super) commits: Commits,
    /// Spawned calls whose outcome was handed out before their end was recorded, and
    /// whose recording is still under way.
    pub(super) ending: watch::Sender<usize>,
    /// This participant's writes in the store but maybe not yet in its view.
    pub(super) own_writes: OwnWrites,
    next_session: AtomicU64,
    aborted: watch::Sender<bool>,
    failed: watch::Sender<Option<OperationFailedInfo>>,
}

impl OpShared {
    pub fn new(
        ledger: Arc<LedgerInner>,
        id: OperationId,
        is_initiator: bool,
        start_time: Timestamp,
        epoch: u64,
        data: LedgerData,
    ) -> (Arc<Self>, PresenceEvents) {
        let (roster, events) = ledger.presence.follow(ledger.config.participant.clone());
        let shared = Arc::new(Self {
            ledger,
            id,
            is_initiator,
            start_time,
            started: Instant::now(),
            epoch,
            local: Mutex::new(Local {
                sessions: BTreeMap::new(),
                calls: HashMap::new(),
                temps: BTreeSet::new(),
                cached: Some(Arc::new(data)),
                worker_grace: None,
                heartbeat: None,
                heartbeat_callback: OperationCallback::default(),
                watcher: None,
                self_cleanup: None,
                coordination: None,
                roster,
                cleanup_ids: Vec::new(),
                ended: false,
                fenced: false,
            }),
            commits: Commits::default(),
            ending: watch::channel(0).0,
            own_writes: OwnWrites::default(),
            next_session: AtomicU64::new(1),
            aborted: watch::channel(false).0,
            failed: watch::channel(None).0,
        });
        (shared, events)
    }

    pub fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> Timestamp {
        self.ledger.clock.now()
    }

    /// Open a new session with its callbacks.
    pub fn open_session(&self, callback: OperationCallback) -> u64 {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.local().sessions.insert(session, callback);
        session
    }

    /// A handle for callbacks and tasks that belong to no user session.
    pub fn internal_handle(self: &Arc<Self>) -> Operation {
        Operation::from_shared(self.clone(), 0)
    }

    /// Change the operation as this participant: fenced, refused once ended, and counted
    /// as a heartbeat of this participant.
    pub async fn modify(
        self: &Arc<Self>,
        change: impl FnMut(&mut LedgerData, Timestamp) -> Result<()> + Send,
    ) -> Result<LedgerData> {
        self.write(change, false).await
    }

    /// A write that only refreshes heartbeats ([`Store::refresh`]: no trail entry).
    ///
    /// [`Store::refresh`]: crate::store::Store::refresh
    pub async fn refresh(
        self: &Arc<Self>,
        change: impl FnMut(&mut LedgerData, Timestamp) -> Result<()> + Send,
    ) -> Result<LedgerData> {
        self.write(change, true).await
    }

    /// A write in its turn: what was queued before it is written first.
    async fn write(
        self: &Arc<Self>,
        change: impl FnMut(&mut LedgerData, Timestamp) -> Result<()> + Send,
        heartbeat_only: bool,
    ) -> Result<LedgerData> {
        let _turn = self.commits.turn.lock().await;
        self.write_queued_before().await;
        self.write_now(change, heartbeat_only).await
    }

    /// The write itself, for a caller that holds the turn.
    pub(super) async fn write_now(
        self: &Arc<Self>,
        change: impl FnMut(&mut LedgerData, Timestamp) -> Result<()> + Send,
        heartbeat_only: bool,
    ) -> Result<LedgerData> {
        let kind = if heartbeat_only {
            WriteNow::HeartbeatOnly
        } else {
            WriteNow::Change(&[])
        };
        // Until its result is in the view, the watcher knows a write is landing.
        let _in_flight = self.own_writes.begin();
        let (data, _) = self.write_now_as(change, kind).await?;
        self.observe(&data);
        Ok(data)
    }

    /// A change written with `lines` for the operation log (formatted lines), in one
    /// write where the store can; the lines are handed to the log-line callback once
    /// written (a line that could not be appended is only traced: log lines are best
    /// effort once the state is written). For the group commit, which needs nothing
    /// back: the data as written becomes this participant's view without a copy (a copy
    /// of a large operation per write, on the writer's thread). With `frame`, `change`
    /// is that frame step (built from it by the caller) and the store may be sent the
    /// step instead.
    pub(super) async fn write_now_logged_to_view(
        self: &Arc<Self>,
        change: impl FnMut(&mut LedgerData, Timestamp) -> Result<()> + Send,
        frame: Option<&FrameStep>,
        lines: &[String],
    ) -> Result<()> {
        let kind = match frame {
            Some(step) => WriteNow::Frame(step, lines),
            None => WriteNow::Change(lines),
        };
        // Until its result is in the view, the watcher knows a write is landing.
        let _in_flight = self.own_writes.begin();
        let (data, logged) = self.write_now_as(change, kind).await?;
        self.observe_owned(data);
        self.report_lines(lines, logged);
        Ok(())
    }

    fn report_lines(&self, lines: &[String], logged: Result<()>) {
        if let Err(e) = logged {
            tracing::debug!(operation = %self.id, error = %e, "log line not written");
        }
        for line in lines {
            self.ledger.report_line(line);
        }
    }

    /// The write; the caller takes in the data as written ([`observe`](Self::observe)).
    async fn write_now_as(
        self: &Arc<Self>,
        mut change: impl FnMut(&mut LedgerData, Timestamp) -> Result<()> + Send,
        kind: WriteNow<'_>,
    ) -> Result<(LedgerData, Result<()>)> {
        let now = self.now();
        let me = self.ledger.config.participant.clone();
        let epoch = self.epoch;
        let op = self.id.clone();
        let mut unregistered = false;
        let mut apply = |data: &mut LedgerData| {
            unregistered = !data.participants.contains_key(&me);
            super::core::registry::admit_writer(data, &op, &me, epoch, now)?;
            change(data, now)
        };
        let store = &self.ledger.store;
        let framed = matches!(kind, WriteNow::Frame(..));
        let result = match kind {
            WriteNow::HeartbeatOnly => store
                .refresh(&self.id, &mut apply)
                .await
                .map(|data| (data, Ok(()))),
            WriteNow::Change([]) => store
                .modify(&self.id, &mut apply)
                .await
                .map(|data| (data, Ok(()))),
            WriteNow::Change(lines) => store.modify_logged(&self.id, &mut apply, lines).await,
            WriteNow::Frame(step, lines) => {
                let frame = FrameChange {
                    participant: me.clone(),
                    epoch,
                    at: now,
                    step: step.clone(),
                };
                store
                    .modify_frame(&self.id, &frame, &mut apply, lines)
                    .await
            }
        };
        if framed
            && matches!(result, Err(Error::Fenced { .. }))
            && let Some(seen) = store.latest_seen(&self.id)
        {
            // Applied by the backend: whether this participant was still registered is
            // judged on the operation the refusal brought.
            unregistered = !seen.data.participants.contains_key(&me);
        }
        match &result {
            Ok(_) => {}
            // A late write of a participant that left (and was dropped from the
            // registry) is refused like a fenced one, but it is no crash of ours.
            Err(Error::Fenced { .. }) if unregistered && self.local().ended => {}
            Err(Error::Fenced { .. }) => self.on_fenced(),
            Err(_) => {}
        }
        result
    }

    /// Take in a fresh view of the operation: cache it and react to abort and failure.
    pub fn observe(self: &Arc<Self>, data: &LedgerData) {
        {
            let mut local = self.local();
            let newer = local.cached.as_ref().is_none_or(|c| c.seq <= data.seq);
            if newer {
                local.cached = Some(Arc::new(data.clone()));
            }
        }
        self.react(data);
    }

    /// [`observe`](Self::observe) of data the caller needs no more: kept without a copy.
    pub fn observe_owned(self: &Arc<Self>, data: LedgerData) {
        let data = Arc::new(data);
        {
            let mut local = self.local();
            let newer = local.cached.as_ref().is_none_or(|c| c.seq <= data.seq);
            if newer {
                local.cached = Some(data.clone());
            }
        }
        self.react(&data);
    }

    /// React to what a fresh view says: abort, fencing, failure; show it to presence.
    fn react(self: &Arc<Self>, data: &LedgerData) {
        if data.aborted {
            self.abort_locally();
        }
        {
            let mut local = self.local();
            if !local.ended {
                local.roster.see(data);
            }
        }
        let mine = data.participants.get(&self.ledger.config.participant);
        if mine.is_some_and(|p| p.epoch != self.epoch || p.state == ParticipantState::Crashed) {
            self.on_fenced();
        }
        if matches!(
            data.operation_state,
            crate::model::OperationState::Cleanup | crate::model::OperationState::Failed
        ) {
            let info = super::failure::info_from(data, self.now());
            self.fail_locally(info);
        }
    }

    /// This participant was declared crashed by others: stop everything it runs.
    fn on_fenced(self: &Arc<Self>) {
        self.local().fenced = true;
        let info = OperationFailedInfo {
            operation_id: self.id.clone(),
            failed_at: self.now(),
            reason: Some(format!(
                "participant `{}` was declared crashed and is fenced",
                self.ledger.config.participant
            )),
            crashed_call_ids: Vec::new(),
        };
        self.fail_locally(info);
    }

    pub fn is_aborted(&self) -> bool {
        *self.aborted.borrow()
    }

    pub fn subscribe_aborted(&self) -> watch::Receiver<bool> {
        self.aborted.subscribe()
    }

    pub fn failure(&self) -> Option<OperationFailedInfo> {
        self.failed.borrow().clone()
    }

    pub fn subscribe_failed(&self) -> watch::Receiver<Option<OperationFailedInfo>> {
        self.failed.subscribe()
    }

    /// Every open session's handle with its callbacks, taken out of the lock so the
    /// callbacks run without it.
    fn sessions_with_callbacks(self: &Arc<Self>) -> Vec<(Operation, OperationCallback)> {
        let sessions: Vec<(u64, OperationCallback)> = self
            .local()
            .sessions
            .iter()
            .map(|(s, c)| (*s, c.clone()))
            .collect();
        sessions
            .into_iter()
            .map(|(s, c)| (Operation::from_shared(self.clone(), s), c))
            .collect()
    }

    /// Mark this participant aborted (once) and tell every session.
    pub fn abort_locally(self: &Arc<Self>) {
        let newly = self
            .aborted
            .send_if_modified(|a| !std::mem::replace(a, true));
        if !newly {
            return;
        }
        for (op, cb) in self.sessions_with_callbacks() {
            if let Some(f) = &cb.on_abort {
                super::panic::call_quietly("on_abort", || f(&op));
            }
        }
    }

    /// Signal the operation's failure to this participant (the first failure wins) and
    /// start its self-cleanup.
    pub fn fail_locally(self: &Arc<Self>, info: OperationFailedInfo) {
        let newly = self.failed.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(info.clone());
                true
            } else {
                false
            }
        });
        if !newly {
            return;
        }
        for (op, cb) in self.sessions_with_callbacks() {
            if let Some(f) = &cb.on_failure {
                super::panic::call_quietly("on_failure", || f(&op, &info));
            }
        }
        let shared = self.clone();
        let task = spawn(async move { super::failure::self_cleanup(shared, info).await });
        self.local().self_cleanup = Some(task);
    }

    /// `Fenced` once this participant is known to be declared crashed (from its own
    /// refused writes or its last view of the ledger).
    pub fn check_fenced(&self) -> Result<()> {
        let local = self.local();
        let me = &self.ledger.config.participant;
        let declared = local
            .cached
            .as_ref()
            .and_then(|d| d.participants.get(me))
            .is_some_and(|p| p.epoch != self.epoch || p.state == ParticipantState::Crashed);
        if local.fenced || declared {
            return Err(Error::Fenced {
                operation: self.id.clone(),
                participant: me.clone(),
                epoch: self.epoch,
            });
        }
        Ok(())
    }

    /// Like [`OpShared::check_fenced`], against the ledger as it is now: for writes that
    /// follow no write of this participant (a log line of the user), so a participant
    /// that was stopped and declared crashed meanwhile learns it before it writes.
    ///
    /// The operation is read again only when it changed since this participant's last
    /// view: the store's current revision is compared with the view's (the file store
    /// reads it from the head of the file), so a run with many open calls does not
    /// re-read a large operation for every log line. Every write bumps the revision, so
    /// an unchanged revision means the view is the ledger as it is.
    pub async fn check_fenced_now(self: &Arc<Self>) -> Result<()> {
        if self.view_is_current().await == Some(false)
            && let Ok(data) = self.ledger.store.read(&self.id).await
        {
            self.observe(&data);
        }
        self.check_fenced()
    }

    /// Whether the operation is still at the revision of this participant's last view:
    /// `Some(false)` when it moved (or that cannot be told), `None` when it is gone.
    pub(super) async fn view_is_current(&self) -> Option<bool> {
        let known = self.local().cached.as_ref().map(|d| Revision::new(d.seq));
        match self.ledger.store.current_revision(&self.id).await {
            Ok(now) => Some(now.is_some() && known == now),
            Err(Error::OperationNotFound(_)) => None,
            Err(_) => Some(false),
        }
    }

    /// Write a line to the operation log (and to the ledger's log-line callback); refused
    /// with `Fenced` once this participant is fenced out.
    pub async fn log(&self, level: LogLevel, message: &str) -> Result<()> {
        self.check_fenced()?;
        self.ledger.log(&self.id, level, message).await
    }

    /// Log without failing the caller: log lines are best effort once the state is written.
    pub async fn log_quietly(&self, level: LogLevel, message: &str) {
        self.log_quietly_at(None, level, message).await;
    }

    /// [`log_quietly`](Self::log_quietly), stamped `at` (now when `None`).
    pub async fn log_quietly_at(&self, at: Option<Timestamp>, level: LogLevel, message: &str) {
        let logged = match self.check_fenced() {
            Ok(()) => self.ledger.log_at(&self.id, at, level, message).await,
            Err(e) => Err(e),
        };
        if let Err(e) = logged {
            tracing::debug!(operation = %self.id, error = %e, "log line not written");
        }
    }

    /// Stop the background tasks of this participant in this operation.
    /// Returns the aborted tasks, for callers that must know no write of theirs is still
    /// in flight (a beat already inside the store finishes before its task ends).
    pub fn stop_tasks(&self) -> Vec<JoinHandle<()>> {
        let mut local = self.local();
        local.ended = true;
        for id in local.cleanup_ids.drain(..) {
            crate::cleanup::CleanupHandler::global().unregister(id);
        }
        let heartbeat = local.heartbeat.take().and_then(Registration::stop);
        let tasks: Vec<JoinHandle<()>> = [heartbeat, local.watcher.take()]
            .into_iter()
            .flatten()
            .collect();
        for task in &tasks {
            task.abort();
        }
        tasks
    }

    /// Wait (bounded) for the cleanup this participant coordinates, if any.
    pub async fn finish_coordination(&self) {
        let task = self.local().coordination.take();
        if let Some(task) = task {
            let bound = self.ledger.config.cleanup_wait * 2 + crate::process::DEFAULT_GRACE;
            if tokio::time::timeout(bound, task).await.is_err() {
                tracing::warn!(operation = %self.id, "cleanup coordination still running after {bound:?}");
            }
        }
    }

    /// Whether this participant's view is at least as new as `revision`.
    pub(super) fn view_covers(&self, revision: Revision) -> bool {
        self.local()
            .cached
            .as_ref()
            .is_some_and(|d| Revision::new(d.seq) >= revision)
    }
}

impl Drop for OpShared {
    fn drop(&mut self) {
        let local = self.local.get_mut().unwrap_or_else(|e| e.into_inner());
        // Dropping the registration stops the beats.
        local.heartbeat.take();
        if let Some(h) = local.watcher.take() {
            h.abort();
        }
    }
}

/// Spawn on the current runtime; the ledger is always used from within one.
pub(crate) fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}
