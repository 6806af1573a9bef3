//! Waiting for spawned calls (`sync`, `await_call`) and for work that must give way when
//! the operation fails (`wait_for_completion`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::CallId;

use super::callbacks::{BoxFuture, OperationFailedInfo};
use super::operation::Operation;
use super::spawned::{CallStatus, TrackedCall};

type OnFailed = Arc<dyn Fn(OperationFailedInfo) -> BoxFuture<'static, ()> + Send + Sync>;
type OnDone = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Callbacks of `sync` and `await_call`.
#[derive(Clone, Default)]
pub struct SyncOptions {
    on_operation_failed: Option<OnFailed>,
    on_completion: Option<OnDone>,
}

impl SyncOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs if the operation fails before the calls are resolved.
    pub fn on_operation_failed<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(OperationFailedInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_operation_failed = Some(Arc::new(move |i| Box::pin(f(i))));
        self
    }

    /// Runs once every call is resolved (succeeded or failed).
    pub fn on_completion<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_completion = Some(Arc::new(move || Box::pin(f())));
        self
    }
}

/// Outcome of waiting for spawned calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncResult {
    pub successful_calls: Vec<CallId>,
    pub failed_calls: Vec<CallId>,
    /// Calls still running when the wait ended (the operation failed first).
    pub unknown_calls: Vec<CallId>,
    pub operation_failed: bool,
}

impl SyncResult {
    pub fn all_succeeded(&self) -> bool {
        self.failed_calls.is_empty() && self.unknown_calls.is_empty() && !self.operation_failed
    }

    pub fn has_failed(&self) -> bool {
        !self.failed_calls.is_empty()
    }

    pub fn all_resolved(&self) -> bool {
        self.unknown_calls.is_empty()
    }
}

impl fmt::Display for SyncResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SyncResult(successful: {}, failed: {}, unknown: {}, operationFailed: {})",
            self.successful_calls.len(),
            self.failed_calls.len(),
            self.unknown_calls.len(),
            self.operation_failed
        )
    }
}

/// Callbacks of `wait_for_completion`.
pub struct WaitOptions<T> {
    on_operation_failed: Option<OnFailed>,
    on_error: Option<Box<dyn FnOnce(String) -> BoxFuture<'static, T> + Send>>,
}

impl<T> Default for WaitOptions<T> {
    fn default() -> Self {
        Self {
            on_operation_failed: None,
            on_error: None,
        }
    }
}

impl<T: Send + 'static> WaitOptions<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_operation_failed<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(OperationFailedInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_operation_failed = Some(Arc::new(move |i| Box::pin(f(i))));
        self
    }

    /// Turns an error of the work into a fallback result.
    pub fn on_error<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.on_error = Some(Box::new(move |e| Box::pin(f(e))));
        self
    }
}

impl Operation {
    /// Wait until every call has finished or the operation fails, whichever comes first.
    /// `on_completion` runs once every call is resolved, so at once for no calls.
    pub async fn sync(&self, calls: &[&dyn TrackedCall], options: SyncOptions) -> SyncResult {
        let mut result = SyncResult::default();
        if calls.is_empty() {
            if let Some(f) = &options.on_completion {
                f().await;
            }
            return result;
        }
        let all_done = async {
            for call in calls {
                call.wait().await;
            }
        };
        tokio::select! {
            _ = all_done => {}
            _ = self.failed() => {}
        }
        // The failure also counts when it cancelled the calls and so finished them.
        if let Some(info) = self.failure() {
            result.operation_failed = true;
            if let Some(f) = &options.on_operation_failed {
                f(info).await;
            }
        }
        for call in calls {
            let id = call.call_id().clone();
            match call.status() {
                CallStatus::Succeeded => result.successful_calls.push(id),
                CallStatus::Failed => result.failed_calls.push(id),
                CallStatus::Pending => result.unknown_calls.push(id),
            }
        }
        if result.all_resolved()
            && let Some(f) = &options.on_completion
        {
            f().await;
        }
        result
    }

    /// `sync` for one call.
    pub async fn await_call(&self, call: &dyn TrackedCall, options: SyncOptions) -> SyncResult {
        self.sync(&[call], options).await
    }

    /// Run `work` unless the operation fails first: then `on_operation_failed` runs and the
    /// result is `Error::OperationFailed` (the work is dropped). An error of the work goes
    /// to `on_error` for a fallback, if given.
    pub async fn wait_for_completion<T, E, Fut>(
        &self,
        work: Fut,
        options: WaitOptions<T>,
    ) -> Result<T>
    where
        T: Send + 'static,
        E: fmt::Display,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        tokio::select! {
            r = work => match r {
                Ok(v) => Ok(v),
                Err(e) => match options.on_error {
                    Some(f) => Ok(f(e.to_string()).await),
                    None => Err(Error::Work(e.to_string())),
                },
            },
            info = self.failed() => {
                if let Some(f) = &options.on_operation_failed {
                    f(info.clone()).await;
                }
                Err(Error::OperationFailed {
                    operation: info.operation_id,
                    reason: info.reason.unwrap_or_default(),
                })
            }
        }
    }
}
