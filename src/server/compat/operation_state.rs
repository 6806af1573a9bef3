//! `/operation/state`, `/operation/abort`, `/operation/log`: reading the operation and
//! its flag, setting the flag from outside (as `tom-ledger abort` does: anyone the
//! server admits may abort), and appending to its log. None of them registers anyone.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::ids::ParticipantId;
use crate::ledger::core::registry;
use crate::model::{LedgerData, LogLevel, ParticipantState};

use super::super::state::AppState;
use super::act::log;
use super::request::{ApiResult, Fields};

/// `GET /operation/state?operationId=` or `POST` with the id in the body.
pub(crate) async fn state_of(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let fields = Fields::from_body(&headers, &body)?.merged(Fields::from_query(query))?;
    let op = fields.operation()?;
    let data = state.store.read(&op).await?;
    Ok(Json(json!({
        "operationId": data.operation_id,
        "state": data.operation_state,
        "aborted": data.aborted,
        "callFrameCount": data.call_frames.len(),
        "participants": present(&data),
        "initiatorId": data.initiator_id,
    })))
}

/// Active participants and owners of frames, each once, in the order seen.
fn present(data: &LedgerData) -> Vec<&ParticipantId> {
    let mut out: Vec<&ParticipantId> = Vec::new();
    let registered = data
        .participants
        .iter()
        .filter(|(_, p)| p.state == ParticipantState::Active)
        .map(|(id, _)| id);
    for id in registered.chain(data.call_frames.iter().map(|f| &f.participant_id)) {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// `{operationId, value?}`: set (default) or clear the abort flag.
pub(crate) async fn abort(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let fields = Fields::from_body(&headers, &body)?;
    let op = fields.operation()?;
    let value = fields.bool("value")?.unwrap_or(true);
    let now = state.clock.now();
    state
        .store
        .modify(&op, &mut |data: &mut LedgerData| {
            if value {
                registry::abort_from_outside(data, now)
            } else {
                registry::refuse_ended(data)?;
                data.aborted = false;
                data.last_heartbeat = now;
                Ok(())
            }
        })
        .await?;
    let line = if value {
        "ABORT_REQUESTED by=original-protocol client".to_string()
    } else {
        "ABORT_FLAG_SET value=false".to_string()
    };
    log(&state, &op, &[(LogLevel::Warning, line)]).await;
    Ok(Json(json!({"success": true})))
}

/// `{operationId, message, level?}`: one line; a level other than DEBUG, INFO, WARNING or
/// ERROR is INFO, as in the original.
pub(crate) async fn append_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let fields = Fields::from_body(&headers, &body)?;
    let op = fields.operation()?;
    let message = fields.required_string("message")?.to_owned();
    let level = match fields
        .string("level")?
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("DEBUG") => LogLevel::Debug,
        Some("WARNING") => LogLevel::Warning,
        Some("ERROR") => LogLevel::Error,
        _ => LogLevel::Info,
    };
    // Only a live operation takes lines from this protocol (the original answered 404
    // for any other).
    state.store.read(&op).await?;
    let line = crate::model::log_line(&state.clock.now(), level, &message);
    state
        .store
        .append_log(&op, crate::store::LogKind::Main, &line)
        .await?;
    Ok(Json(json!({"success": true})))
}
