//! [`Call`]: a tracked unit of work that the caller ends or fails itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::CallId;
use crate::model::{CallFrame, FrameState, FrameStep, LogLevel};

use super::callbacks::CallCallback;
use super::group_commit::{Flush, LogLine, Queued, ThenLog};
use super::operation::Operation;
use super::shared::{ActiveCall, OpShared};
use super::spawned::CallPhase;

/// Options of a call (regular or spawned).
#[derive(Clone)]
pub struct CallOptions<T> {
    pub description: Option<String>,
    /// Whether the call failing (or its owner crashing) fails the whole operation.
    pub fail_on_crash: bool,
    pub callback: CallCallback<T>,
    /// The call this one was made on behalf of, if any.
    pub parent_call_id: Option<CallId>,
}

impl<T> Default for CallOptions<T> {
    fn default() -> Self {
        Self {
            description: None,
            fail_on_crash: true,
            callback: CallCallback::default(),
            parent_call_id: None,
        }
    }
}

impl<T: Send + 'static> CallOptions<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    pub fn fail_on_crash(mut self, v: bool) -> Self {
        self.fail_on_crash = v;
        self
    }

    pub fn callback(mut self, c: CallCallback<T>) -> Self {
        self.callback = c;
        self
    }

    pub fn parent(mut self, call: CallId) -> Self {
        self.parent_call_id = Some(call);
        self
    }
}

/// A call in progress. End it with [`Call::end`] or [`Call::fail`]; dropping it unfinished
/// is logged and fails it.
pub struct Call<T: Clone + Send + 'static> {
    shared: Arc<OpShared>,
    id: CallId,
    description: Option<String>,
    started_at: Timestamp,
    fail_on_crash: bool,
    callback: CallCallback<T>,
    completed: AtomicBool,
}

impl<T: Clone + Send + 'static> Call<T> {
    pub fn call_id(&self) -> &CallId {
        &self.id
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    pub fn is_completed(&self) -> bool {
        self.completed.load(Ordering::SeqCst)
    }

    /// Mark the call finished: refused once it was ended, or cancelled by `leave(true)` or
    /// `complete_cancelling()` (its cleanup has run, its frame is gone).
    fn finish(&self) -> Result<()> {
        if self.completed.swap(true, Ordering::SeqCst) {
            return Err(Error::CallCompleted(self.id.clone()));
        }
        if !self.shared.local().calls.contains_key(&self.id) {
            return Err(Error::Cancelled(self.id.clone()));
        }
        Ok(())
    }

    fn duration_ms(&self) -> i64 {
        (self.shared.now() - self.started_at).num_milliseconds()
    }

    /// End the call successfully; `on_completion` gets the result. A panic in
    /// `on_completion` fails the call instead (`Error::CallFailed` with the panic message).
    pub async fn end(&self, result: T) -> Result<()> {
        self.finish()?;
        let ended = || {
            format!(
                "CALL_ENDED callId={} duration={}ms",
                self.id,
                self.duration_ms()
            )
        };
        // Without `on_completion` the outcome is known now: the line goes with the
        // frame's removal (one write where the store can).
        let Some(f) = &self.callback.on_completion else {
            let line = LogLine::if_written(LogLevel::Info, ended());
            if !remove_frame(&self.shared, &self.id, Flush::Inline, Some(line)).await? {
                self.shared.log_quietly(LogLevel::Info, &ended()).await;
            }
            return Ok(());
        };
        remove_frame(&self.shared, &self.id, Flush::Inline, None).await?;
        if let Err(panic) = super::panic::guarded(|| f(result)).await {
            let cause = Error::CallbackPanicked {
                callback: "on_completion",
                message: panic,
                after: None,
            };
            self.report_failure(&cause.to_string()).await?;
            return Err(Error::CallFailed {
                call: self.id.clone(),
                cause: Arc::new(cause),
            });
        }
        self.shared.log_quietly(LogLevel::Info, &ended()).await;
        Ok(())
    }

    /// Fail the call: its frame goes, `on_cleanup` runs, and with `fail_on_crash` the
    /// operation fails. A panic in `on_cleanup` is logged and returned as
    /// `Error::CallFailed` once the rest is done.
    pub async fn fail(&self, error: impl std::fmt::Display) -> Result<()> {
        self.finish()?;
        let removed = remove_frame(&self.shared, &self.id, Flush::Inline, None).await;
        let reported = self.report_failure(&error.to_string()).await;
        removed?;
        reported
    }

    /// Log the failure of this call (its frame is gone), run `on_cleanup`, and with
    /// `fail_on_crash` fail the operation.
    async fn report_failure(&self, message: &str) -> Result<()> {
        self.shared
            .log_quietly(
                LogLevel::Error,
                &format!(
                    "CALL_FAILED callId={} duration={}ms error={message}",
                    self.id,
                    self.duration_ms()
                ),
            )
            .await;
        let cleanup = run_cleanup(&self.shared, &self.id, self.callback.on_cleanup.as_ref()).await;
        if self.fail_on_crash {
            super::failure::fail_operation(
                &self.shared,
                format!("call `{}` failed: {message}", self.id),
                vec![self.id.clone()],
            )
            .await?;
        }
        cleanup
    }
}

type Cleanup = Arc<dyn Fn() -> super::callbacks::BoxFuture<'static, ()> + Send + Sync>;

/// Run a call's `on_cleanup`; a panic in it is logged and returned as the call's failure.
pub(crate) async fn run_cleanup(
    shared: &Arc<OpShared>,
    id: &CallId,
    on_cleanup: Option<&Cleanup>,
) -> Result<()> {
    let Some(f) = on_cleanup else { return Ok(()) };
    match super::panic::guarded(|| f()).await {
        Ok(()) => Ok(()),
        Err(panic) => {
            let cause = Error::CallbackPanicked {
                callback: "on_cleanup",
                message: panic,
                after: None,
            };
            shared
                .log_quietly(
                    LogLevel::Error,
                    &format!("CALLBACK_PANICKED callId={id} error={cause}"),
                )
                .await;
            Err(Error::CallFailed {
                call: id.clone(),
                cause: Arc::new(cause),
            })
        }
    }
}

impl<T: Clone + Send + 'static> std::fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("call_id", &self.id)
            .field("completed", &self.is_completed())
            .finish()
    }
}

impl<T: Clone + Send + 'static> Drop for Call<T> {
    fn drop(&mut self) {
        if self.is_completed() {
            return;
        }
        self.completed.store(true, Ordering::SeqCst);
        // Already settled by leave(true) or complete_cancelling(). Otherwise it stops
        // counting as running at once (complete() right after the drop is not refused).
        if self.shared.local().calls.remove(&self.id).is_none() {
            return;
        }
        let shared = self.shared.clone();
        let id = self.id.clone();
        let fail_on_crash = self.fail_on_crash;
        let on_cleanup = self.callback.on_cleanup.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(call = %id, "call dropped without end or fail outside a runtime");
            return;
        };
        handle.spawn(async move {
            let message = "dropped without end or fail";
            let _ = remove_frame(&shared, &id, Flush::Inline, None).await;
            shared
                .log_quietly(
                    LogLevel::Error,
                    &format!("CALL_FAILED callId={id} error={message}"),
                )
                .await;
            let _ = run_cleanup(&shared, &id, on_cleanup.as_ref()).await;
            if fail_on_crash {
                let reason = format!("call `{id}` failed: {message}");
                let _ = super::failure::fail_operation(&shared, reason, vec![id]).await;
            }
        });
    }
}

impl Operation {
    /// Start a call tracked to this session.
    pub async fn start_call<T: Clone + Send + 'static>(
        &self,
        options: CallOptions<T>,
    ) -> Result<Call<T>> {
        let shared = &self.shared;
        let id = CallId::generate(self.participant_id());
        let frame = new_frame(shared, &id, self.session, &options);
        let started_at = frame.start_time;
        let line = LogLine::if_written(
            LogLevel::Info,
            format!(
                "CALL_STARTED callId={id} participant={}",
                self.participant_id()
            ),
        );
        add_frame(shared, frame, Flush::Inline, Some(line)).await?;
        shared.local().calls.insert(
            id.clone(),
            ActiveCall {
                session: self.session,
                cancel: None,
                done: None,
                on_cleanup: options.callback.on_cleanup.clone(),
                on_operation_failed: options.callback.on_operation_failed.clone(),
            },
        );
        Ok(Call {
            shared: shared.clone(),
            id,
            description: options.description,
            started_at,
            fail_on_crash: options.fail_on_crash,
            callback: options.callback,
            completed: AtomicBool::new(false),
        })
    }
}

pub(crate) fn new_frame<T>(
    shared: &OpShared,
    id: &CallId,
    session: u64,
    options: &CallOptions<T>,
) -> CallFrame {
    let now = shared.now();
    CallFrame {
        participant_id: shared.ledger.config.participant.clone(),
        call_id: id.clone(),
        pid: i64::from(shared.ledger.config.pid),
        start_time: now,
        last_heartbeat: now,
        state: FrameState::Active,
        description: options.description.clone(),
        resources: Vec::new(),
        fail_on_crash: options.fail_on_crash,
        session_id: Some(session),
        parent_call_id: options.parent_call_id.clone(),
        process: None,
    }
}

/// Written with whatever else of this participant is queued (group commit).
pub(crate) async fn add_frame(
    shared: &Arc<OpShared>,
    frame: CallFrame,
    flush: Flush,
    then_log: ThenLog,
) -> Result<()> {
    queue_frame(shared, frame, flush, then_log).await
}

/// [`add_frame`], queued now; the future waits for the answer.
pub(crate) fn queue_frame(
    shared: &Arc<OpShared>,
    frame: CallFrame,
    flush: Flush,
    then_log: ThenLog,
) -> Queued {
    shared.queue_frame_step(FrameStep::Open(Box::new(frame)), flush, then_log)
}

/// Remove the call's frame and forget the call locally; written with whatever else of
/// this participant is queued (group commit). True when the removal was written, false
/// when the operation is over (its frames are gone with it).
pub(crate) async fn remove_frame(
    shared: &Arc<OpShared>,
    id: &CallId,
    flush: Flush,
    then_log: ThenLog,
) -> Result<bool> {
    shared.local().calls.remove(id);
    let result = shared
        .queue_frame_step(FrameStep::Close(id.clone()), flush, then_log)
        .await;
    match result {
        Ok(()) => Ok(true),
        // Once the operation is over, its frames are gone with it.
        Err(e) if super::failure::is_gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Wait until the spawned calls of this participant whose outcome is known have their
/// end recorded too (see [`SpawnedCall::wait_decided`](super::SpawnedCall::wait_decided)):
/// for what must see every ended call gone from the ledger (completing, leaving).
pub(crate) async fn settle_decided(shared: &OpShared) {
    let mut ending = shared.ending.subscribe();
    let _ = ending.wait_for(|n| *n == 0).await;
}

/// Cancel spawned calls (and wait for them) and fail regular ones.
pub(crate) async fn cancel_calls(shared: &Arc<OpShared>, ids: &[CallId], why: &str) {
    for id in ids {
        let (token, done) = {
            let local = shared.local();
            match local.calls.get(id) {
                Some(c) => (c.cancel.clone(), c.done.clone()),
                None => continue,
            }
        };
        match (token, done) {
            (Some(token), Some(mut done)) => {
                token.cancel();
                let _ = done.wait_for(|p| *p == CallPhase::Done).await;
            }
            _ => {
                // A regular call has no task of its own: its cleanup runs here.
                let on_cleanup = shared
                    .local()
                    .calls
                    .get(id)
                    .and_then(|c| c.on_cleanup.clone());
                let _ = remove_frame(shared, id, Flush::Inline, None).await;
                shared
                    .log_quietly(
                        LogLevel::Warning,
                        &format!("CALL_CANCELLED callId={id} reason={why}"),
                    )
                    .await;
                let _ = run_cleanup(shared, id, on_cleanup.as_ref()).await;
            }
        }
    }
}
