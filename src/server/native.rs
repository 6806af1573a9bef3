//! The native API under `/v1/`: the [`Store`](crate::store::Store) trait over HTTP.
//! Each route is one store call; every change is written through to the store before
//! the answer. Ids from the path are validated before they reach the store.
//!
//! | route | store call |
//! |---|---|
//! | `GET /v1/operations` | `list` |
//! | `POST /v1/operations` (a `LedgerData`) | `create` (201, 409 if taken) |
//! | `GET /v1/operations/{op}` | `read_versioned` (`ETag`) |
//! | `PUT /v1/operations/{op}[?kind=refresh]` (`If-Match`) | `compare_and_swap` (412 on conflict; with `x-on-conflict: current`, the 412 carries the operation as it is); with `x-with-lines: main` the body is `{"data", "lines"}` and the lines are appended to the main log after the write, before the answer (`modify_logged`) |
//! | `POST /v1/operations/{op}/frames` (a `FrameBody`) | `modify_frame`: the server applies the change (`frames.rs`); 409 with what refused it |
//! | `POST /v1/operations/{op}/archive` | `archive` |
//! | `POST /v1/operations/{op}/beat` | a heartbeat kept beside the document (`beats.rs`); 410 if fenced |
//! | `GET/POST /v1/operations/{op}/log/{main,debug}` | `read_log` (`?from=`) / `append_log` |
//! | `GET /v1/operations/{op}/events` | `watch`, as JSON lines (see `events.rs`) |
//! | `GET /v1/archived`, `GET /v1/archived/{op}` | `list_archived`, `read_archived` |
//! | `GET /v1/summaries` | `list_summaries` |

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::ids::OperationId;
use crate::model::{LedgerData, ParticipantState};
use crate::store::remote::wire::{
    AGES_HEADER, AppendBody, ArchivedBody, BeatBody, CURRENT_ON_CONFLICT, ConflictBody, IdsBody,
    KIND_REFRESH, LINES_FAILED_HEADER, LogBody, LoggedWriteBody, ON_CONFLICT_HEADER, SummariesBody,
    SummaryBody, WITH_LINES_HEADER, WITH_LINES_MAIN, check_lines_for_write, etag, parse_etag,
    parse_log_segment,
};
use crate::store::{LogCursor, LogKind, Revision, Versioned, WriteKind};

use super::errors::ApiError;
use super::events;
use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/operations", get(list).post(create))
        .route("/v1/operations/{op}", get(read).put(swap))
        .route("/v1/operations/{op}/archive", post(archive))
        .route("/v1/operations/{op}/beat", post(beat))
        .route(
            "/v1/operations/{op}/log/{kind}",
            get(read_log).post(append_log),
        )
        .route("/v1/operations/{op}/events", get(events::stream))
        .route("/v1/archived", get(list_archived))
        .route("/v1/archived/{op}", get(read_archived))
        .route("/v1/summaries", get(summaries))
}

type ApiResult<T = Response> = std::result::Result<T, ApiError>;

/// An operation id from the path.
pub fn operation(raw: &str) -> ApiResult<OperationId> {
    Ok(OperationId::parse(raw)?)
}

/// A JSON body; bad JSON or a wrong shape is a 400 naming what was wrong.
pub(super) fn json_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid json body: {e}")))
}

/// The data with its revision as `ETag` and its participants' heartbeat ages by the
/// server's clock.
pub(super) fn versioned(state: &AppState, status: StatusCode, v: Versioned) -> Response {
    let ages =
        serde_json::to_string(&state.beats.ages(&v.data, state.clock.now())).unwrap_or_default();
    let mut response = (status, Json(v.data)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag(v.revision)) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&ages) {
        headers.insert(AGES_HEADER, value);
    }
    response
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<IdsBody>> {
    Ok(Json(IdsBody {
        operations: state.store.list().await?,
    }))
}

async fn list_archived(State(state): State<AppState>) -> ApiResult<Json<IdsBody>> {
    Ok(Json(IdsBody {
        operations: state.store.list_archived().await?,
    }))
}

async fn summaries(State(state): State<AppState>) -> ApiResult<Json<SummariesBody>> {
    let entries = state.store.list_summaries().await?;
    Ok(Json(SummariesBody {
        entries: entries.iter().map(SummaryBody::of).collect(),
    }))
}

async fn create(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let data: LedgerData = json_body(&body)?;
    state.store.create(&data).await?;
    let written = state.store.read_versioned(&data.operation_id).await?;
    Ok(versioned(&state, StatusCode::CREATED, written))
}

async fn read(State(state): State<AppState>, Path(op): Path<String>) -> ApiResult {
    let op = operation(&op)?;
    let current = state.hubs.current(&state, &op).await?;
    Ok(versioned(&state, StatusCode::OK, current))
}

async fn read_archived(
    State(state): State<AppState>,
    Path(op): Path<String>,
) -> ApiResult<Json<LedgerData>> {
    let op = operation(&op)?;
    Ok(Json(state.store.read_archived(&op).await?))
}

pub(super) async fn swap(
    State(state): State<AppState>,
    Path(op): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let op = operation(&op)?;
    let Some(expected) = headers.get(header::IF_MATCH) else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "a write needs `If-Match` with the revision it was read at",
        ));
    };
    let expected = expected
        .to_str()
        .map_err(|_| ApiError::bad_request("`If-Match` is not text"))
        .and_then(|v| Ok(parse_etag(v)?))?;
    let kind = match query.get("kind").map(String::as_str) {
        None | Some("change") => WriteKind::Change,
        Some(KIND_REFRESH) => WriteKind::Refresh,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "write kind `{other}`: expected `change` or `refresh`"
            )));
        }
    };
    // The written data keeps the operation's id, whatever the body says (as on every
    // store).
    let (data, lines) = written_body(&headers, &body)?;
    let wants_current = headers
        .get(ON_CONFLICT_HEADER)
        .is_some_and(|v| v.as_bytes() == CURRENT_ON_CONFLICT.as_bytes());
    // Lines keep the order of the writes they describe: one logged write at a time.
    let turn = match lines {
        Some(_) => Some(state.line_order.turn(&op).await),
        None => None,
    };
    match state
        .store
        .compare_and_swap(&op, expected, data, kind)
        .await
    {
        Ok(written) => {
            state.write_holds.release(&op);
            let failed = append_lines(&state, &op, lines.as_deref().unwrap_or_default()).await;
            drop(turn);
            // The operation's event streams hear of it now, without a read.
            state.hubs.offer(&op, &written);
            let mut response = versioned(&state, StatusCode::OK, written);
            if let Some(e) = failed {
                let reason = HeaderValue::from_str(&e.to_string())
                    .unwrap_or(HeaderValue::from_static("log lines not appended"));
                response.headers_mut().insert(LINES_FAILED_HEADER, reason);
            }
            Ok(response)
        }
        Err(e @ Error::Conflict { .. }) if wants_current => {
            drop(turn);
            // Its retry comes with the operation read now: frame writes wait for it.
            state.write_holds.hold(&op);
            let current = state.hubs.current(&state, &op).await?;
            Ok(conflict_with_current(e, current))
        }
        Err(e @ Error::Conflict { found, .. }) => Ok(conflict(e, found)),
        Err(e) => Err(e.into()),
    }
}

/// A write's body: the operation alone, or with `x-with-lines: main` the operation and
/// its lines for the main log (checked against the bounds before anything is written).
fn written_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<(LedgerData, Option<Vec<String>>)> {
    let Some(with_lines) = headers.get(WITH_LINES_HEADER) else {
        return Ok((json_body(body)?, None));
    };
    if with_lines.as_bytes() != WITH_LINES_MAIN.as_bytes() {
        return Err(ApiError::bad_request(format!(
            "`{WITH_LINES_HEADER}: {}`: expected `{WITH_LINES_MAIN}`",
            String::from_utf8_lossy(with_lines.as_bytes())
        )));
    }
    let logged: LoggedWriteBody = json_body(body)?;
    check_lines_for_write(&logged.lines)?;
    Ok((logged.data, Some(logged.lines)))
}

/// Append a written change's lines to the main log, in order; the first failure (the
/// write stands, later lines are still tried).
pub(super) async fn append_lines(
    state: &AppState,
    op: &OperationId,
    lines: &[String],
) -> Option<Error> {
    let mut failed = None;
    for line in lines {
        if let Err(e) = state.store.append_log(op, LogKind::Main, line).await {
            failed.get_or_insert(e);
        }
    }
    failed
}

/// 412 with the revision the operation is at.
fn conflict(e: Error, found: Revision) -> Response {
    let mut response = ApiError::from(e).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(found)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// 412 with the operation as it is and its revision, for a retry without a read.
fn conflict_with_current(e: Error, current: Versioned) -> Response {
    let body = ConflictBody {
        error: e.to_string(),
        current: current.data,
    };
    let mut response = (StatusCode::PRECONDITION_FAILED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(current.revision)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

async fn archive(
    State(state): State<AppState>,
    Path(op): Path<String>,
) -> ApiResult<Json<ArchivedBody>> {
    let op = operation(&op)?;
    let archived = state.store.archive(&op).await?;
    state.beats.forget(&op);
    state.line_order.forget(&op);
    Ok(Json(ArchivedBody {
        location: archived.location().to_string(),
    }))
}

async fn read_log(
    State(state): State<AppState>,
    Path((op, kind)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<LogBody>> {
    let op = operation(&op)?;
    let kind = parse_log_segment(&kind)?;
    let from = match query.get("from") {
        None => LogCursor::START,
        Some(raw) => LogCursor::at(
            raw.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("log cursor `{raw}`: not a number")))?,
        ),
    };
    let (text, cursor) = state.store.read_log(&op, kind, from).await?;
    Ok(Json(LogBody {
        text,
        cursor: cursor.position(),
    }))
}

async fn append_log(
    State(state): State<AppState>,
    Path((op, kind)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let op = operation(&op)?;
    let kind = parse_log_segment(&kind)?;
    let append: AppendBody = json_body(&body)?;
    state.store.append_log(&op, kind, &append.line).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A participant's heartbeat: stamped by the server's clock, beside the document (which
/// is read, not written). A participant that is not active at that epoch any more is
/// fenced: 410.
async fn beat(State(state): State<AppState>, Path(op): Path<String>, body: Bytes) -> ApiResult {
    let op = operation(&op)?;
    let beat: BeatBody = json_body(&body)?;
    let current = state.hubs.current(&state, &op).await?;
    let admitted = current
        .data
        .participants
        .get(&beat.participant)
        .is_some_and(|p| p.epoch == beat.epoch && p.state == ParticipantState::Active);
    if !admitted {
        return Err(ApiError::new(
            StatusCode::GONE,
            Error::Fenced {
                operation: op,
                participant: beat.participant,
                epoch: beat.epoch,
            }
            .to_string(),
        ));
    }
    state.beats.stamp(&op, &beat.participant, beat.epoch);
    Ok(versioned(&state, StatusCode::OK, current))
}
