//! `/call/start`, `/call/end`, `/call/fail`, `/callframe/create`, `/callframe/delete`:
//! call frames written for the participant that sends the request (its session or id),
//! ended by their owner, through the core's frame and failure transitions. Nothing is
//! kept in the server's memory (the original leaked an entry per started call).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::ids::CallId;
use crate::ledger::core::failure::{Failure, fail};
use crate::ledger::core::frames;
use crate::model::{CallFrame, FrameState, LedgerData, LogLevel, time};
use crate::store::WriteKind;

use super::super::state::AppState;
use super::act::{act, log};
use super::caller::{Caller, Sent, Unclaimed};
use super::request::{ApiResult, Fields};

/// A frame of `caller`, stamped with the server's clock.
fn frame(
    data: &LedgerData,
    caller: &Caller,
    call: &CallId,
    options: &Options,
    now: Timestamp,
) -> CallFrame {
    let pid = data.participants.get(&caller.id).map_or(-1, |p| p.pid);
    CallFrame {
        participant_id: caller.id.clone(),
        call_id: call.clone(),
        pid: i64::from(pid),
        start_time: now,
        last_heartbeat: now,
        state: FrameState::Active,
        description: options.description.clone(),
        resources: Vec::new(),
        fail_on_crash: options.fail_on_crash,
        session_id: Some(caller.epoch),
        parent_call_id: None,
        process: None,
    }
}

/// The call options a request may carry.
struct Options {
    description: Option<String>,
    fail_on_crash: bool,
}

impl Options {
    fn read(fields: &Fields) -> ApiResult<Options> {
        Ok(Options {
            description: fields.string("description")?.map(str::to_owned),
            fail_on_crash: fields.bool("failOnCrash")?.unwrap_or(true),
        })
    }
}

/// `{operationId, sessionId?, description?, failOnCrash?}` → `{callId, startedAt}`.
pub(crate) async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Sent { fields, op, claims } = Sent::read(&headers, &body)?;
    let options = Options::read(&fields)?;
    let mut started = None;
    let acted = act(
        &state,
        &op,
        &claims,
        &Unclaimed::SoleOriginalClient,
        WriteKind::Change,
        |data, caller, now| {
            // A fresh id per attempt: the one written is the one answered.
            let call = CallId::generate(&caller.id);
            frames::start(data, frame(data, caller, &call, &options, now))?;
            started = Some(call);
            Ok(())
        },
    )
    .await?;
    let call = started.ok_or_else(|| Error::invalid("call start", "no frame was written"))?;
    let line = format!("CALL_STARTED callId={call} participant={}", acted.caller.id);
    log(&state, &op, &[(LogLevel::Info, line)]).await;
    Ok(Json(json!({
        "callId": call,
        "startedAt": time::format(&acted.now),
    })))
}

/// `{operationId, callId}`: the owner's call ended.
pub(crate) async fn end(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (op, call, _) = remove(&state, &headers, &body, None).await?;
    log(
        &state,
        &op,
        &[(LogLevel::Info, format!("CALL_ENDED callId={call}"))],
    )
    .await;
    Ok(Json(json!({"success": true})))
}

/// `{operationId, callId, error?}`: the owner's call failed; with `failOnCrash` the
/// operation fails too (the one failure decision of the core), its sender reported as
/// the one who saw it.
pub(crate) async fn fail_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let fields = Fields::from_body(&headers, &body)?;
    let error = fields
        .string("error")?
        .unwrap_or("unknown error")
        .to_owned();
    let (op, call, acted) = remove(&state, &headers, &body, Some(&error)).await?;
    let mut lines = vec![(
        LogLevel::Error,
        format!("CALL_FAILED callId={call} error={error}"),
    )];
    if acted.failed_operation {
        lines.push((
            LogLevel::Error,
            format!("OPERATION_FAILED reason=call `{call}` failed: {error}"),
        ));
    }
    log(&state, &op, &lines).await;
    Ok(Json(json!({"success": true})))
}

/// `{operationId, callId, participantId?}` → `{success, callId, data}`: a frame under a
/// call id the client chose.
pub(crate) async fn create_frame(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Sent { fields, op, claims } = Sent::read(&headers, &body)?;
    let call = fields.call()?;
    let options = Options::read(&fields)?;
    let acted = act(
        &state,
        &op,
        &claims,
        &Unclaimed::SoleOriginalClient,
        WriteKind::Change,
        |data, caller, now| {
            if data.frame(&call).is_some() {
                return Err(Error::CallExists {
                    operation: data.operation_id.clone(),
                    call: call.clone(),
                });
            }
            frames::start(data, frame(data, caller, &call, &options, now))
        },
    )
    .await?;
    let line = format!("CALL_STARTED callId={call} participant={}", acted.caller.id);
    log(&state, &op, &[(LogLevel::Info, line)]).await;
    Ok(Json(
        json!({"success": true, "callId": call, "data": acted.data}),
    ))
}

/// `{operationId, callId}` → `{success, data}`.
pub(crate) async fn delete_frame(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (op, call, acted) = remove(&state, &headers, &body, None).await?;
    log(
        &state,
        &op,
        &[(LogLevel::Info, format!("CALL_ENDED callId={call}"))],
    )
    .await;
    Ok(Json(json!({"success": true, "data": acted.data})))
}

struct Removed {
    data: LedgerData,
    failed_operation: bool,
}

/// Remove a call's frame as its owner; with `failure`, fail the operation when the frame
/// says a failure of the call does.
async fn remove(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    failure: Option<&str>,
) -> ApiResult<(crate::ids::OperationId, CallId, Removed)> {
    let Sent { fields, op, claims } = Sent::read(headers, body)?;
    let call = fields.call()?;
    let mut failed_operation = false;
    let acted = act(
        state,
        &op,
        &claims,
        &Unclaimed::FrameOwner(call.clone()),
        WriteKind::Change,
        |data, caller, now| {
            failed_operation = false;
            let removed = frames::end(data, &call).ok_or_else(|| Error::CallNotFound {
                operation: data.operation_id.clone(),
                call: call.clone(),
            })?;
            if let Some(error) = failure
                && removed.fail_on_crash
            {
                let mut cause = Failure::new(format!("call `{call}` failed: {error}"), &caller.id);
                cause.crashed_calls = vec![call.clone()];
                failed_operation = fail(data, now, cause).coordinates();
            }
            Ok(())
        },
    )
    .await?;
    Ok((
        op,
        call,
        Removed {
            data: acted.data,
            failed_operation,
        },
    ))
}
