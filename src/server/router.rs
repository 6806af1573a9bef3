//! The one place where the server's routes are put together, with the layers every
//! request passes: JSON errors (outermost), the token, the body limit, the time limit.
//!
//! More routes merge in here: the status page at `GET /` and the original's
//! compatibility endpoints each come as a `Router<AppState>` of their own, merged in
//! [`routes`] beside the native API.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::auth::{Auth, require_token};
use super::errors::{errors_as_json, method_not_allowed, not_found};
use super::state::AppState;
use super::{compat, discovery, frames, native, page};

/// Limits of every request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body; bigger ones get 413 (judged by `Content-Length` first).
    pub body_bytes: usize,
    /// Longest time to read a request and produce its answer (not the streaming of an
    /// answer); slower gets 408.
    pub request_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 4 * 1024 * 1024,
            request_time: Duration::from_secs(30),
        }
    }
}

/// Every route of the server, without layers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(discovery::routes())
        .merge(native::routes())
        .merge(frames::routes())
        .merge(compat::routes())
        .merge(page::routes())
}

/// The whole application: routes, fallbacks and layers.
pub fn app(state: AppState, auth: Auth, limits: Limits) -> Router {
    routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_time,
        ))
        .layer(RequestBodyLimitLayer::new(limits.body_bytes))
        .layer(middleware::from_fn_with_state(auth, require_token))
        .layer(middleware::from_fn(errors_as_json))
        .with_state(state)
}
