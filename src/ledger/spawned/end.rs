//! How a spawned call ends: its callbacks (each guarded against panics), its frame
//! removed with the outcome's log line, and the operation's failure where the call's
//! failure means one. The outcome is handed out before the end is recorded; `Ending`
//! counts such calls, so completing and leaving wait for their records.

use std::sync::Arc;

use crate::error::Error;
use crate::model::LogLevel;

use super::super::call::{CallOptions, remove_frame};
use super::super::group_commit::{Flush, LogLine};
use super::super::shared::OpShared;
use super::{CallPhase, FrameWrite, Inner, Outcome, lock_outcome, panicked};

/// Record how the call ended: callbacks (each guarded against panics), frame removed, log
/// line, operation failure. A panicking callback fails the call with the panic message;
/// `join`, `sync` and `leave` resolve whatever happens.
pub(super) async fn finish<T: Clone + Send + Sync + 'static>(
    shared: &Arc<OpShared>,
    inner: &Arc<Inner<T>>,
    options: &CallOptions<T>,
    mut outcome: Outcome<T>,
    flush: Flush,
    frame_write: Option<FrameWrite>,
) {
    let id = &inner.id;
    let callback = &options.callback;
    // The end's line keeps this time, however late its write.
    let ended_at = shared.now();
    let mut fell_back = false;
    if let (Outcome::Failed(message), Some(f)) = (&outcome, &callback.on_call_crashed) {
        match super::super::panic::guarded(|| f()).await {
            Ok(Some(v)) => {
                shared
                    .log_quietly(
                        LogLevel::Error,
                        &format!("CALL_FAILED callId={id} error={message}"),
                    )
                    .await;
                fell_back = true;
                outcome = Outcome::Success(v);
            }
            Ok(None) => {}
            Err(panic) => {
                outcome = Outcome::Failed(Arc::new(Error::CallbackPanicked {
                    callback: "on_call_crashed",
                    message: panic,
                    after: Some(message.clone()),
                }))
            }
        }
    }
    if let (Outcome::Success(v), Some(f)) = (&outcome, &callback.on_completion) {
        let v = v.clone();
        if let Err(panic) = super::super::panic::guarded(|| f(v)).await {
            outcome = Outcome::Failed(Arc::new(Error::CallbackPanicked {
                callback: "on_completion",
                message: panic,
                after: None,
            }));
        }
    }
    // Nothing below changes the outcome unless `on_cleanup` runs (its panic fails the
    // call) or the failure fails the operation (which callers must see first): otherwise
    // the outcome is known now, and whoever waits for it goes on while the end is
    // recorded (a scheduler starts its next worker first).
    let cleanup_runs = !matches!(outcome, Outcome::Success(_)) && callback.on_cleanup.is_some();
    let fails_operation = matches!(outcome, Outcome::Failed(_)) && options.fail_on_crash;
    let _ending = (!cleanup_runs && !fails_operation).then(|| {
        *lock_outcome(inner) = Some(outcome.clone());
        inner.phase.send_replace(CallPhase::Decided);
        Ending::begin(shared)
    });
    // A frame write the work did not wait for: answered before the end is recorded, so
    // that the end's line says how the call ended. Refused (the operation failed, this
    // participant was fenced), the call ends as cancelled.
    if let Some(write) = frame_write
        && write.await.is_err()
    {
        inner.token.cancel();
        outcome = Outcome::Cancelled;
    }
    // The outcome's line is written right after the frame is removed, by whoever
    // removes it.
    let line = match &outcome {
        Outcome::Success(_) if fell_back => (LogLevel::Info, format!("CALL_FALLBACK callId={id}")),
        Outcome::Success(_) => (LogLevel::Info, format!("CALL_COMPLETED callId={id}")),
        Outcome::Cancelled => (LogLevel::Warning, format!("CALL_CANCELLED callId={id}")),
        Outcome::Failed(message) => (
            LogLevel::Error,
            format!("CALL_FAILED callId={id} error={message}"),
        ),
    };
    let end_line = LogLine::always(line.0, line.1).stamped(ended_at);
    let _ = remove_frame(shared, id, flush, Some(end_line)).await;
    if !matches!(outcome, Outcome::Success(_))
        && let Some(f) = &callback.on_cleanup
        && let Err(panic) = super::super::panic::guarded(|| f()).await
    {
        let after = match &outcome {
            Outcome::Failed(m) => Some(m.clone()),
            _ => None,
        };
        let message = format!("on_cleanup {}", panicked(&panic));
        shared
            .log_quietly(
                LogLevel::Error,
                &format!("CALLBACK_PANICKED callId={id} error={message}"),
            )
            .await;
        outcome = Outcome::Failed(Arc::new(Error::CallbackPanicked {
            callback: "on_cleanup",
            message: panic,
            after,
        }));
    }
    if let Outcome::Failed(message) = &outcome
        && options.fail_on_crash
    {
        let reason = format!("call `{id}` failed: {message}");
        // Boxed: the largest step of a call's end, and the rarest.
        let _ = Box::pin(super::super::failure::fail_operation(
            shared,
            reason,
            vec![id.clone()],
        ))
        .await;
    }
    *lock_outcome(inner) = Some(outcome);
    inner.phase.send_replace(CallPhase::Done);
}

/// Counts a call whose outcome is out while its end is being recorded (completing and
/// leaving wait for none to be left); dropped once the call is done.
struct Ending<'a>(&'a OpShared);

impl<'a> Ending<'a> {
    fn begin(shared: &'a OpShared) -> Self {
        shared.ending.send_modify(|n| *n += 1);
        Ending(shared)
    }
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.ending.send_modify(|n| *n = n.saturating_sub(1));
    }
}
