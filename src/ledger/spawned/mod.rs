//! [`SpawnedCall`]: a call whose work runs in the background and is awaited later.
//!
//! `cancel()` really stops the work: plain work is dropped at its next await point; work
//! that manages a process (exec workers) gets the cancellation token and runs the stop
//! ladder before it returns. Either way the call ends as cancelled, and a cancelled call
//! does not fail the operation.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ids::CallId;
use crate::model::LogLevel;

use super::call::{CallOptions, new_frame, queue_frame};
use super::callbacks::BoxFuture;
use super::group_commit::{Flush, LogLine, Queued};
use super::operation::Operation;
use super::shared::{ActiveCall, spawn};
use crate::model::{CallFrame, ProcessRecord};

mod end;

use end::finish;

pub(crate) type Killer = Arc<dyn Fn(Signal) -> bool + Send + Sync>;

/// A frame write still in flight when the call's work ended (see
/// [`CallContext::answer_frame_later`]): its answer comes with the call's end.
pub(crate) type FrameWrite = BoxFuture<'static, Result<()>>;

/// How a spawned call ended.
#[derive(Clone, Debug)]
enum Outcome<T> {
    Success(T),
    /// The work's own error, typed (shared: every `join()` gets it).
    Failed(Arc<Error>),
    Cancelled,
}

struct Inner<T> {
    id: CallId,
    description: Option<String>,
    outcome: Mutex<Option<Outcome<T>>>,
    /// How far the call is: decided, then done (one channel for both, a channel being
    /// a few hundred bytes per running call).
    phase: watch::Sender<CallPhase>,
    /// Cancelled by `cancel()`, `leave(true)` or the operation's failure.
    token: CancellationToken,
    /// Shared with the work's `CallContext`, which installs the handler.
    killer: Arc<Mutex<Option<Killer>>>,
}

/// How far a spawned call is; only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CallPhase {
    Running,
    /// The outcome is known and nothing left to record can change it (possibly before
    /// its end is recorded; see [`SpawnedCall::wait_decided`]).
    Decided,
    /// Finished: the end is recorded.
    Done,
}

/// Handle on a spawned call. Cheap to clone.
pub struct SpawnedCall<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for SpawnedCall<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// What the work of a spawned call gets: its id, its cancellation token and its
/// operation.
#[derive(Clone)]
pub struct CallContext {
    pub call_id: CallId,
    /// Cancelled by `SpawnedCall::cancel`, `leave(true)` and the operation's failure.
    pub token: CancellationToken,
    pub operation: Operation,
    killer: Arc<Mutex<Option<Killer>>>,
    /// For work that opens its own frame (exec workers: once the process runs, so the
    /// frame is written once, with the process in it).
    pending_frame: Arc<Mutex<Option<CallFrame>>>,
    /// A frame write the work handed over unanswered (its worker ended first).
    frame_write: Arc<Mutex<Option<FrameWrite>>>,
}

/// How a spawned call's work is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpawnMode {
    /// The frame is written first; cancelling drops the work.
    Plain,
    /// The work handles cancellation itself and writes the frame with
    /// [`CallContext::open_frame`] (the frame costs one ledger write, not two).
    SelfManaged,
}

impl CallContext {
    /// Let `SpawnedCall::kill` reach what this work runs (a process group, say).
    pub fn set_kill_handler(&self, f: impl Fn(Signal) -> bool + Send + Sync + 'static) {
        *lock(&self.killer) = Some(Arc::new(f));
    }

    /// Record on the frame, before [`open_frame`](Self::open_frame) writes it, that a
    /// crash of this process fails the operation, whatever the call's own
    /// `fail_on_crash`. For work that reports its own failures to someone else (the
    /// command `exec`: its caller gets the status) but whose death nobody would report.
    pub fn fail_operation_on_crash(&self) {
        if let Some(frame) = lock(&self.pending_frame).as_mut() {
            frame.fail_on_crash = true;
        }
    }

    /// Write this call's frame, with the process it runs, for work started with
    /// [`Operation::spawn_supervised`] (once the process runs, so that the frame is written
    /// once, with what recovery needs to find the process again). For other calls, and on
    /// a second call, it does nothing.
    pub async fn open_frame(&self, process: Option<ProcessRecord>) -> Result<()> {
        match self.queue_frame(process) {
            Some(write) => write.await,
            None => Ok(()),
        }
    }

    /// [`open_frame`](Self::open_frame), queued now: the frame takes its place in the
    /// group commit's queue at once and the future returned only waits for the answer
    /// (a worker's pending frame write holds nothing else). `None` when there is no
    /// frame to write.
    pub(crate) fn queue_frame(&self, process: Option<ProcessRecord>) -> Option<Queued> {
        let mut frame = lock(&self.pending_frame).take()?;
        // A worker's frame is written off this thread (group commit): the thread that
        // starts and reaps workers does not wait for the disk. Until it is written, the
        // worker's parent-death signal covers a crash of this process.
        let flush = if process.is_some() {
            Flush::Background
        } else {
            Flush::Inline
        };
        let shared = &self.operation.shared;
        let mut line = format!(
            "CALL_SPAWNED callId={} participant={}",
            self.call_id, shared.ledger.config.participant
        );
        // The worker's pid and name in the same line (what `trace` and the status page
        // show), so a worker's start costs one log line.
        if let Some(p) = &process {
            line.push_str(&format!(" pid={}", p.pid));
            if let Some(name) = frame.description.as_deref().filter(|d| is_one_word(d)) {
                line.push_str(&format!(" name={name}"));
            }
        }
        frame.process = process;
        let started = frame.start_time;
        // The line is written once the frame is, by whoever writes it.
        Some(queue_frame(
            shared,
            frame,
            flush,
            Some(LogLine::always(LogLevel::Info, line).stamped(started)),
        ))
    }

    /// Hand over this call's frame write, still in flight, when the work's outcome is
    /// known before it is answered (a worker that ended first): the outcome is handed out
    /// at once ([`SpawnedCall::wait_decided`]) and the write's answer comes with the
    /// call's end; a refused write ends the call as cancelled, as it would have had it been
    /// answered while the worker ran.
    pub(crate) fn answer_frame_later(&self, write: FrameWrite) {
        *lock(&self.frame_write) = Some(write);
    }

    /// A setter for the kill handler that can move into a `'static` callback.
    pub(crate) fn killer_handle(&self) -> impl Fn(Killer) + Send + 'static {
        let slot = self.killer.clone();
        move |k| *lock(&slot) = Some(k)
    }
}

/// Whether `text` reads back as one `key=value` field of a log line.
fn is_one_word(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Status of a tracked call, for `sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStatus {
    Pending,
    Succeeded,
    Failed,
}

/// Anything `sync` can wait for, whatever its result type.
pub trait TrackedCall: Send + Sync {
    fn call_id(&self) -> &CallId;
    fn status(&self) -> CallStatus;
    /// Resolves when the call has finished; never fails.
    fn wait(&self) -> BoxFuture<'_, ()>;
}

impl<T: Clone + Send + Sync + 'static> TrackedCall for SpawnedCall<T> {
    fn call_id(&self) -> &CallId {
        &self.inner.id
    }

    fn status(&self) -> CallStatus {
        match &*lock_outcome(&self.inner) {
            None => CallStatus::Pending,
            Some(Outcome::Success(_)) => CallStatus::Succeeded,
            Some(_) => CallStatus::Failed,
        }
    }

    fn wait(&self) -> BoxFuture<'_, ()> {
        Box::pin(SpawnedCall::wait(self))
    }
}

impl<T: Clone + Send + Sync + 'static> SpawnedCall<T> {
    pub fn call_id(&self) -> &CallId {
        &self.inner.id
    }

    pub fn description(&self) -> Option<&str> {
        self.inner.description.as_deref()
    }

    pub fn is_completed(&self) -> bool {
        lock_outcome(&self.inner).is_some()
    }

    pub fn is_success(&self) -> bool {
        matches!(&*lock_outcome(&self.inner), Some(Outcome::Success(_)))
    }

    /// Completed without success (failed or cancelled).
    pub fn is_failed(&self) -> bool {
        matches!(
            &*lock_outcome(&self.inner),
            Some(Outcome::Failed(_) | Outcome::Cancelled)
        )
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// The result: an error if the call failed, was cancelled, or is not finished.
    pub fn result(&self) -> Result<T> {
        match &*lock_outcome(&self.inner) {
            None => Err(Error::CallPending(self.inner.id.clone())),
            Some(Outcome::Success(v)) => Ok(v.clone()),
            Some(Outcome::Failed(cause)) => Err(Error::CallFailed {
                call: self.inner.id.clone(),
                cause: cause.clone(),
            }),
            Some(Outcome::Cancelled) => Err(Error::Cancelled(self.inner.id.clone())),
        }
    }

    pub fn result_or_none(&self) -> Option<T> {
        self.result().ok()
    }

    pub fn result_or(&self, default: T) -> T {
        self.result().unwrap_or(default)
    }

    /// The typed error of a failed call (not of a cancelled one).
    pub fn failure(&self) -> Option<Arc<Error>> {
        match &*lock_outcome(&self.inner) {
            Some(Outcome::Failed(cause)) => Some(cause.clone()),
            _ => None,
        }
    }

    /// The error message if the call failed.
    pub fn error(&self) -> Option<String> {
        match &*lock_outcome(&self.inner) {
            Some(Outcome::Failed(m)) => Some(m.to_string()),
            Some(Outcome::Cancelled) => Some(format!("call `{}` was cancelled", self.inner.id)),
            _ => None,
        }
    }

    /// Wait until the call has finished (never fails).
    pub async fn wait(&self) {
        let mut rx = self.inner.phase.subscribe();
        let _ = rx.wait_for(|p| *p == CallPhase::Done).await;
    }

    /// Wait until the call's outcome is known: as soon as its work has ended (for a
    /// worker: its process has exited and was reaped) and nothing left to do can change
    /// it, which may be before its end is recorded in the ledger ([`wait`](Self::wait)
    /// waits for that too). The result is available from then on. For callers that act
    /// on the outcome at once, as a scheduler starting the next worker does; completing
    /// the operation waits for the record.
    ///
    /// One exception: a worker that ended before the write of its frame was answered is
    /// decided on how it ended, without waiting for that answer. Should the write then be
    /// refused (the operation failed or this participant was fenced meanwhile), the call
    /// ends as cancelled: [`wait`](Self::wait), [`join`](Self::join) and the result from
    /// then on say so.
    pub async fn wait_decided(&self) {
        let mut phase = self.inner.phase.subscribe();
        let _ = phase.wait_for(|p| *p >= CallPhase::Decided).await;
    }

    /// Wait for the call and return its result.
    pub async fn join(&self) -> Result<T> {
        self.wait().await;
        self.result()
    }

    /// Ask the call to stop, without waiting for it: it ends as cancelled once its work
    /// has stopped (a worker's group through the stop ladder). No-op once finished.
    pub fn request_cancel(&self) {
        self.inner.token.cancel();
    }

    /// Stop the call and wait until it has ended as cancelled (no-op once finished).
    pub async fn cancel(&self) {
        self.inner.token.cancel();
        self.wait().await;
    }

    /// Send a signal to what the call runs (its worker's process group). False when the
    /// call has nothing to signal or has finished.
    pub fn kill(&self, signal: Signal) -> bool {
        if self.is_completed() {
            return false;
        }
        let killer = lock(&self.inner.killer).clone();
        killer.is_some_and(|k| k(signal))
    }
}

impl<T> fmt::Display for SpawnedCall<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.outcome.lock().unwrap_or_else(|e| e.into_inner()) {
            None => "pending",
            Some(Outcome::Success(_)) => "success",
            Some(Outcome::Failed(_)) => "failed",
            Some(Outcome::Cancelled) => "cancelled",
        };
        write!(f, "SpawnedCall({}, {state})", self.inner.id)
    }
}

impl Operation {
    /// Run `work` in the background as a call tracked to this session. Returns at once;
    /// the call id is available immediately.
    pub fn spawn_call<T, E, F, Fut>(&self, options: CallOptions<T>, work: F) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + 'static,
        F: FnOnce(CallContext) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        self.spawn_tracked(options, SpawnMode::Plain, work)
    }

    /// Run work that supervises a process of its own as a call. Unlike `spawn_call`:
    /// - the work handles cancellation itself (watch `ctx.token`, stop the process tree,
    ///   then return; the call then ends as cancelled);
    /// - the work writes the call's frame itself with [`CallContext::open_frame`], once the
    ///   process runs, with the process in it. If the work returns without opening it, the
    ///   call still ends normally, only without a frame.
    pub fn spawn_supervised<T, E, F, Fut>(&self, options: CallOptions<T>, work: F) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + 'static,
        F: FnOnce(CallContext) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        self.spawn_tracked(options, SpawnMode::SelfManaged, work)
    }

    /// Like `spawn_call`; in `SelfManaged` mode the work handles cancellation through the
    /// token and writes its own frame (exec workers: their process tree must be stopped
    /// first, and the frame records the process).
    pub(crate) fn spawn_tracked<T, E, F, Fut>(
        &self,
        options: CallOptions<T>,
        mode: SpawnMode,
        work: F,
    ) -> SpawnedCall<T>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + 'static,
        F: FnOnce(CallContext) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        let shared = self.shared.clone();
        let id = CallId::generate(self.participant_id());
        let token = CancellationToken::new();
        let inner = Arc::new(Inner {
            id: id.clone(),
            description: options.description.clone(),
            outcome: Mutex::new(None),
            phase: watch::channel(CallPhase::Running).0,
            token: token.clone(),
            killer: Arc::new(Mutex::new(None)),
        });
        shared.local().calls.insert(
            id.clone(),
            ActiveCall {
                session: self.session,
                cancel: Some(token.clone()),
                done: Some(inner.phase.subscribe()),
                on_cleanup: options.callback.on_cleanup.clone(),
                on_operation_failed: options.callback.on_operation_failed.clone(),
            },
        );
        let frame = new_frame(&shared, &id, self.session, &options);
        let self_managed = mode == SpawnMode::SelfManaged;
        let ctx = CallContext {
            call_id: id.clone(),
            token: token.clone(),
            operation: self.clone(),
            killer: inner.killer.clone(),
            pending_frame: Arc::new(Mutex::new(Some(frame))),
            frame_write: Arc::new(Mutex::new(None)),
        };
        let frame_write = ctx.frame_write.clone();
        let call = SpawnedCall {
            inner: inner.clone(),
        };
        // The task lives as long as the worker: the futures of the ledger writes before
        // and after the work (each the size of a store write) are boxed, so that the task
        // holds only what waiting for the work needs.
        spawn(async move {
            let opened = if self_managed {
                Ok(())
            } else {
                Box::pin(ctx.open_frame(None)).await
            };
            let outcome = match opened {
                Err(e) => Outcome::Failed(Arc::new(e)),
                Ok(()) => {
                    // A panic of the work fails the call with the panic's message.
                    let fut = super::panic::guarded(|| work(ctx));
                    let result = if self_managed {
                        Some(fut.await)
                    } else {
                        tokio::select! {
                            biased;
                            _ = token.cancelled() => None,
                            r = fut => Some(r),
                        }
                    };
                    match result {
                        _ if token.is_cancelled() => Outcome::Cancelled,
                        Some(Ok(Ok(v))) => Outcome::Success(v),
                        Some(Ok(Err(e))) => Outcome::Failed(Arc::new(Error::from_work(e))),
                        Some(Err(panic)) => Outcome::Failed(Arc::new(Error::Panicked(panic))),
                        None => Outcome::Cancelled,
                    }
                }
            };
            let flush = if self_managed {
                Flush::Background
            } else {
                Flush::Inline
            };
            let frame_write = lock(&frame_write).take();
            Box::pin(finish(
                &shared,
                &inner,
                &options,
                outcome,
                flush,
                frame_write,
            ))
            .await;
        });
        call
    }
}

/// The failure message of a call whose work or callback panicked.
pub(crate) fn panicked(message: &str) -> String {
    format!("panicked: {message}")
}

fn lock_outcome<T>(inner: &Inner<T>) -> std::sync::MutexGuard<'_, Option<Outcome<T>>> {
    inner.outcome.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
