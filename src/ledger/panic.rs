//! Catching panics of user code (spawned work, call callbacks, operation callbacks), so a
//! panic fails the call it belongs to instead of killing the task that would have
//! resolved it (a `SpawnedCall` that never resolves hangs `join`, `sync` and `leave`).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The message of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// A future that turns a panic while it is polled into `Err(message)`.
pub(crate) struct CatchPanic<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(message(&*payload))),
        }
    }
}

/// Run `future`; a panic inside it becomes `Err(message)`.
pub(crate) fn catching<F: Future>(future: F) -> CatchPanic<F> {
    CatchPanic {
        inner: Box::pin(future),
    }
}

/// Build and run a future from user code; a panic while building or running it becomes
/// `Err(message)`.
pub(crate) async fn guarded<F, Fut>(make: F) -> Result<Fut::Output, String>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let fut = catch_unwind(AssertUnwindSafe(make)).map_err(|p| message(&*p))?;
    catching(fut).await
}

/// Call a plain (non-async) callback; a panic is reported to `tracing` and swallowed, so
/// the heartbeat or watch task that called it keeps running.
pub(crate) fn call_quietly(what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        tracing::error!(callback = what, panic = %message(&*payload), "callback panicked");
    }
}
