//! The status page at `GET /`: operations live, one operation in detail, and an abort
//! button. Plain HTML, CSS and a little JavaScript embedded in the binary (no build step,
//! nothing loaded from elsewhere).
//!
//! - The page and its two assets are public: they hold no data. Everything the page
//!   shows comes from `/page/api/...`, which needs the bearer token like every other
//!   route; the page sends it in the `Authorization` header of each `fetch()`, so a
//!   request from another site (which cannot add that header without a CORS preflight
//!   this server never grants) is refused.
//! - [`view`]: what the page shows, computed on the server with the server's clock.
//! - [`feed`]: one event stream for the whole list (changes of every live operation,
//!   operations appearing or archived).
//! - [`abort`]: the only write the page makes.

mod abort;
mod feed;
mod view;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::errors::ApiError;
use super::native::operation;
use super::state::AppState;

pub use view::{OperationRow, OperationView};

const INDEX_HTML: &str = include_str!("../../../assets/page/index.html");
const APP_JS: &str = include_str!("../../../assets/page/app.js");
const STYLE_CSS: &str = include_str!("../../../assets/page/style.css");

/// Paths answered without the token: the page and its assets, which carry no data.
pub const PUBLIC_PATHS: &[&str] = &["/", "/page/app.js", "/page/style.css"];

/// Nothing but this server: no inline script, no other origin, never in a frame (so the
/// abort button cannot be clicked through someone else's page).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/page/app.js", get(app_js))
        .route("/page/style.css", get(style_css))
        .route("/page/api/operations", get(list))
        .route("/page/api/operations/{op}", get(detail))
        .route("/page/api/operations/{op}/abort", post(abort::abort))
        .route("/page/api/events", get(feed::stream))
}

/// An embedded asset with the headers every page answer carries.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn list(State(state): State<AppState>) -> Result<axum::Json<view::ListView>, ApiError> {
    Ok(axum::Json(view::list(&state).await?))
}

async fn detail(
    State(state): State<AppState>,
    Path(op): Path<String>,
) -> Result<axum::Json<OperationView>, ApiError> {
    let op = operation(&op)?;
    Ok(axum::Json(view::detail(&state, &op).await?))
}
