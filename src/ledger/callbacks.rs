//! Callbacks of calls, operations and the ledger, as optional closures.
//!
//! Call callbacks are async (they may release resources); operation and ledger callbacks
//! are plain functions called from the heartbeat and watch tasks, so they must not block.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::ids::{CallId, OperationId};
use crate::model::time;

use super::operation::Operation;
use crate::presence::{HeartbeatError, HeartbeatResult};

pub use crate::future::BoxFuture;

type AsyncFn0<R> = Arc<dyn Fn() -> BoxFuture<'static, R> + Send + Sync>;
type AsyncFn1<A, R> = Arc<dyn Fn(A) -> BoxFuture<'static, R> + Send + Sync>;

/// Why and when an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationFailedInfo {
    pub operation_id: OperationId,
    pub failed_at: Timestamp,
    pub reason: Option<String>,
    pub crashed_call_ids: Vec<CallId>,
}

impl fmt::Display for OperationFailedInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OperationFailedInfo(operation: {}, failedAt: {}, reason: {}, crashedCalls: [{}])",
            self.operation_id,
            time::format(&self.failed_at),
            self.reason.as_deref().unwrap_or("-"),
            self.crashed_call_ids
                .iter()
                .map(CallId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Callbacks of one call.
pub struct CallCallback<T> {
    pub(crate) on_cleanup: Option<AsyncFn0<()>>,
    pub(crate) on_completion: Option<AsyncFn1<T, ()>>,
    pub(crate) on_call_crashed: Option<AsyncFn0<Option<T>>>,
    pub(crate) on_operation_failed: Option<AsyncFn1<OperationFailedInfo, ()>>,
}

impl<T> Default for CallCallback<T> {
    fn default() -> Self {
        Self {
            on_cleanup: None,
            on_completion: None,
            on_call_crashed: None,
            on_operation_failed: None,
        }
    }
}

impl<T> Clone for CallCallback<T> {
    fn clone(&self) -> Self {
        Self {
            on_cleanup: self.on_cleanup.clone(),
            on_completion: self.on_completion.clone(),
            on_call_crashed: self.on_call_crashed.clone(),
            on_operation_failed: self.on_operation_failed.clone(),
        }
    }
}

impl<T: Send + 'static> CallCallback<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs when the call fails, is cancelled, or its operation fails while it runs.
    pub fn on_cleanup<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_cleanup = Some(Arc::new(move || Box::pin(f())));
        self
    }

    /// Runs with the result when the call succeeds.
    pub fn on_completion<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_completion = Some(Arc::new(move |v| Box::pin(f(v))));
        self
    }

    /// Runs when the call's work fails; `Some(value)` is a fallback result that makes the
    /// call succeed, `None` means no fallback.
    pub fn on_call_crashed<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<T>> + Send + 'static,
    {
        self.on_call_crashed = Some(Arc::new(move || Box::pin(f())));
        self
    }

    /// Runs when the operation fails while the call is open.
    pub fn on_operation_failed<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(OperationFailedInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_operation_failed = Some(Arc::new(move |i| Box::pin(f(i))));
        self
    }
}

type OpFn<A> = Arc<dyn Fn(&Operation, &A) + Send + Sync>;
type OpFn0 = Arc<dyn Fn(&Operation) + Send + Sync>;
type StrFn = Arc<dyn Fn(&str) + Send + Sync>;
type GlobalHeartbeatFn = Arc<dyn Fn(&OperationId, &HeartbeatError) + Send + Sync>;

/// Callbacks of an operation (heartbeat outcome, abort, failure).
#[derive(Clone, Default)]
pub struct OperationCallback {
    pub(crate) on_heartbeat_success: Option<OpFn<HeartbeatResult>>,
    pub(crate) on_heartbeat_error: Option<OpFn<HeartbeatError>>,
    pub(crate) on_abort: Option<OpFn0>,
    pub(crate) on_failure: Option<OpFn<OperationFailedInfo>>,
}

impl OperationCallback {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_heartbeat_success(
        mut self,
        f: impl Fn(&Operation, &HeartbeatResult) + Send + Sync + 'static,
    ) -> Self {
        self.on_heartbeat_success = Some(Arc::new(f));
        self
    }

    pub fn on_heartbeat_error(
        mut self,
        f: impl Fn(&Operation, &HeartbeatError) + Send + Sync + 'static,
    ) -> Self {
        self.on_heartbeat_error = Some(Arc::new(f));
        self
    }

    pub fn on_abort(mut self, f: impl Fn(&Operation) + Send + Sync + 'static) -> Self {
        self.on_abort = Some(Arc::new(f));
        self
    }

    pub fn on_failure(
        mut self,
        f: impl Fn(&Operation, &OperationFailedInfo) + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Arc::new(f));
        self
    }
}

/// Callbacks of the whole ledger.
#[derive(Clone, Default)]
pub struct LedgerCallback {
    pub(crate) on_backup_created: Option<StrFn>,
    pub(crate) on_log_line: Option<StrFn>,
    pub(crate) on_global_heartbeat_error: Option<GlobalHeartbeatFn>,
}

impl LedgerCallback {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called with the archive location when an operation is archived.
    pub fn on_backup_created(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_backup_created = Some(Arc::new(f));
        self
    }

    /// Called with every line written to an operation log by this process.
    pub fn on_log_line(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_log_line = Some(Arc::new(f));
        self
    }

    /// Called with every heartbeat error of every operation of this ledger.
    pub fn on_global_heartbeat_error(
        mut self,
        f: impl Fn(&OperationId, &HeartbeatError) + Send + Sync + 'static,
    ) -> Self {
        self.on_global_heartbeat_error = Some(Arc::new(f));
        self
    }
}
