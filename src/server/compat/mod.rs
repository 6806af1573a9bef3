//! The original's HTTP protocol (its 15 endpoints, paths and JSON fields), so its
//! clients work against `tom-ledger serve`. A layer over the same core and store as
//! everything else: each endpoint is a transition of `ledger::core` applied through the
//! store's read-change-write, acting for the participant that sent the request
//! (`caller.rs`), with the server's clock as the time of every change. Nothing about an
//! operation is kept in the server's memory, so a restart loses nothing.
//!
//! | endpoint | method | acts for | core transition |
//! |---|---|---|---|
//! | `/health`, `/status` | GET | – | (discovery, served beside the native API) |
//! | `/operation/create` | POST | `participantId` | `registry::register_initiator` |
//! | `/operation/join` | POST | `participantId` | `registry::join` (live holder judged) |
//! | `/operation/leave` | POST | its session | `registry::leave` (own frames refused or cancelled) |
//! | `/operation/complete` | POST | the initiator | `registry::complete`, then archive |
//! | `/operation/heartbeat` | POST | the sender | `admit_writer` + `frames::beat` (a refresh) |
//! | `/operation/abort` | POST | – | `registry::abort_from_outside` |
//! | `/operation/state` | GET, POST | – | (read) |
//! | `/operation/log` | POST | – | (log line) |
//! | `/call/start` | POST | its session | `frames::start` |
//! | `/call/end` | POST | the frame's owner | `frames::end` |
//! | `/call/fail` | POST | the frame's owner | `frames::end`, `failure::fail` with `failOnCrash` |
//! | `/callframe/create` | POST | `participantId` | `frames::start` |
//! | `/callframe/delete` | POST | the frame's owner | `frames::end` |
//!
//! Differences from the original, on purpose: methods are checked (405), ids are
//! validated (400), an unknown operation is 404 also for join, refusals by the
//! operation's state are 409, bodies must be `application/json` (415), and no CORS
//! headers are sent (a web page must not drive a local ledger).

mod act;
mod caller;
mod calls;
mod heartbeat;
mod lifecycle;
mod operation_state;
mod request;

use axum::Router;
use axum::routing::{get, post};

use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/operation/create", post(lifecycle::create))
        .route("/operation/join", post(lifecycle::join))
        .route("/operation/leave", post(lifecycle::leave))
        .route("/operation/complete", post(lifecycle::complete))
        .route("/operation/heartbeat", post(heartbeat::heartbeat))
        .route("/operation/abort", post(operation_state::abort))
        .route(
            "/operation/state",
            get(operation_state::state_of).post(operation_state::state_of),
        )
        .route("/operation/log", post(operation_state::append_log))
        .route("/call/start", post(calls::start))
        .route("/call/end", post(calls::end))
        .route("/call/fail", post(calls::fail_call))
        .route("/callframe/create", post(calls::create_frame))
        .route("/callframe/delete", post(calls::delete_frame))
}
