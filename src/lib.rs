//! Launch, track and clean up worker processes under one supervised operation.
//!
//! Several processes (a CLI, an editor extension, scripts, workers on other machines)
//! share an *operation* through a *ledger*: they see each other's calls, detect each
//! other's crashes, propagate an abort, and every registered temporary resource is
//! removed even after Ctrl+C, `kill -9` or a crash.
//!
//! The layers, from the bottom:
//! - [`model`], [`ids`], [`clock`]: the data on disk, validated ids, injectable time.
//! - [`store`]: where operations live (`FileStore` embedded; more backends behind the
//!   same trait). Knows nothing about processes.
//! - [`process`]: process groups, identity, the stop ladder. Knows nothing about files.
//! - [`presence`]: participant liveness: heartbeat registrations, pidfd watches, the one
//!   stale threshold, and a stream of joined/expired participants.
//! - [`temp_path`]: the registered form of temp paths, what they may never be, and
//!   their one deletion function.
//! - [`timeline`]: an operation's calls as spans, read from its log (for `trace` and the
//!   status page).
//! - `ledger`: operations, calls, heartbeats, abort, crash handling, exec workers.
//! - [`simulate`]: the scenario simulator, every participant a real process.
//! - [`server`]: `tom-ledger serve`, any store over HTTP; `store::remote` is its client
//!   (`Connect::remote`, `Connect::discover`).

pub mod cleanup;
pub mod clock;
pub mod error;
pub mod future;
pub mod ids;
pub mod ledger;
pub mod model;
pub mod poll;
pub mod presence;
pub mod process;
pub mod revision;
pub mod server;
pub mod simulate;
pub mod stop_reason;
pub mod store;
pub mod temp_path;
pub mod timeline;

pub use cleanup::{CleanupHandler, StopSignals};
pub use error::{Error, Result};
pub use ids::{CallId, OperationId, ParticipantId};
pub use ledger::{
    Call, CallCallback, CallContext, CallOptions, Connect, HeartbeatError, HeartbeatErrorType,
    HeartbeatOptions, HeartbeatResult, Ledger, LedgerCallback, Operation, OperationCallback,
    OperationFailedInfo, OperationOptions, SpawnedCall, SyncOptions, SyncResult, WaitOptions,
};
pub use model::{LogLevel, OperationState};

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
