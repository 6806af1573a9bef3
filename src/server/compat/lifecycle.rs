//! `/operation/create`, `/operation/join`, `/operation/leave`, `/operation/complete`:
//! registering the client that sends them, at its own epoch, through the core's registry
//! transitions. Session ids are registration epochs (see `caller.rs`), so they survive a
//! restart of the server.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId, ParticipantId};
use crate::ledger::core::{join_ids, registry};
use crate::model::{LedgerData, LogLevel, time};
use crate::presence::Presence;
use crate::store::WriteKind;

use super::super::state::AppState;
use super::act::{act, log};
use super::caller::{Sent, Unclaimed, registration};
use super::heartbeat::presence;
use super::request::{ApiResult, Fields};

/// Judgements of a live holder asked for in one join before it gives up.
const JOIN_VERDICTS: usize = 8;

/// `participantPid`: the client's pid as it sent it, `-1` when it sent none.
fn client_pid(fields: &Fields) -> ApiResult<i32> {
    Ok(fields
        .int("participantPid", i64::from(i32::MIN)..=i64::from(i32::MAX))?
        .map_or(-1, |p| p as i32))
}

fn session_answer(data: &LedgerData, me: &ParticipantId, epoch: u64) -> Json<Value> {
    Json(json!({
        "operationId": data.operation_id,
        "participantId": me,
        "isInitiator": data.initiator_id == *me,
        "sessionId": epoch,
        "startTime": time::format(&data.start_time),
    }))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let fields = Fields::from_body(&headers, &body)?;
    let me = fields
        .participant("participantId")?
        .ok_or_else(|| Error::invalid("request body", "field `participantId` is missing"))?;
    let pid = client_pid(&fields)?;
    let description = fields.string("description")?.map(str::to_owned);
    let now = state.clock.now();
    let id = OperationId::generate(&me, now);
    let mut data = LedgerData::new(id.clone(), me.clone(), now);
    data.description = description.clone();
    registry::register_initiator(&mut data, registration(pid, now));
    state.store.create(&data).await?;
    let message = format!(
        "OPERATION_CREATED initiator={me} description={}",
        description.as_deref().unwrap_or("")
    );
    log(&state, &id, &[(LogLevel::Info, message)]).await;
    Ok(session_answer(&data, &me, 1))
}

pub(crate) async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let fields = Fields::from_body(&headers, &body)?;
    let op = fields.operation()?;
    let me = fields
        .participant("participantId")?
        .ok_or_else(|| Error::invalid("request body", "field `participantId` is missing"))?;
    let pid = client_pid(&fields)?;
    let (data, epoch) = join_as(&state, &op, &me, pid).await?;
    let message = format!("PARTICIPANT_JOINED participant={me} pid={pid} epoch={epoch}");
    log(&state, &op, &[(LogLevel::Info, message)]).await;
    Ok(session_answer(&data, &me, epoch))
}

/// Register `me` in `op` at a new epoch; a different process holding the id is judged
/// first (by heartbeat age for clients of this protocol, by pid on this host).
async fn join_as(
    state: &AppState,
    op: &OperationId,
    me: &ParticipantId,
    pid: i32,
) -> Result<(LedgerData, u64)> {
    let presence = presence(state);
    let mut holder = registry::Holder::Unknown;
    for _ in 0..=JOIN_VERDICTS {
        let now = state.clock.now();
        let record = registration(pid, now);
        let mut joining = None;
        let result = state
            .store
            .modify(op, &mut |data: &mut LedgerData| {
                let step = registry::join(data, me, &record, &holder, now)?;
                let judge = matches!(step, registry::Joining::Judge(_));
                joining = Some(step);
                if judge {
                    return Err(Error::invalid("join", "needs a liveness verdict"));
                }
                Ok(())
            })
            .await;
        match (joining, result) {
            (Some(registry::Joining::Judge(existing)), _) => {
                holder = registry::Holder::Judged {
                    pid: existing.pid,
                    epoch: existing.epoch,
                    alive: presence.participant_alive(&existing),
                };
            }
            (Some(registry::Joining::Joined { epoch, .. }), Ok(data)) => return Ok((data, epoch)),
            (_, Err(e)) => return Err(e),
            (None, Ok(_)) => break,
        }
    }
    Err(Error::invalid(
        format!("join of operation `{op}` as `{me}`"),
        "the id kept changing hands; try again",
    ))
}

pub(crate) async fn leave(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Sent { fields, op, claims } = Sent::read(&headers, &body)?;
    let cancel = fields.bool("cancelPendingCalls")?.unwrap_or(false);
    let mut cancelled: Vec<CallId> = Vec::new();
    let acted = act(
        &state,
        &op,
        &claims,
        &Unclaimed::SoleOriginalClient,
        WriteKind::Change,
        |data, caller, now| {
            let own: Vec<CallId> = own_frames(data, &caller.id);
            if !own.is_empty() && !cancel {
                return Err(Error::PendingCalls {
                    operation: data.operation_id.clone(),
                    session: caller.epoch,
                    calls: join_ids(&own),
                });
            }
            for call in &own {
                crate::ledger::core::frames::end(data, call);
            }
            cancelled = own;
            registry::leave(data, &caller.id, now);
            Ok(())
        },
    )
    .await?;
    let mut lines: Vec<(LogLevel, String)> = cancelled
        .iter()
        .map(|c| {
            (
                LogLevel::Warning,
                format!("CALL_CANCELLED callId={c} reason=session left"),
            )
        })
        .collect();
    lines.push((
        LogLevel::Info,
        format!("PARTICIPANT_LEFT participant={}", acted.caller.id),
    ));
    log(&state, &op, &lines).await;
    Ok(Json(json!({"success": true})))
}

pub(crate) async fn complete(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Sent { op, claims, .. } = Sent::read(&headers, &body)?;
    act(
        &state,
        &op,
        &claims,
        &Unclaimed::Initiator,
        WriteKind::Change,
        |data, caller, _| {
            if data.initiator_id != caller.id {
                return Err(Error::NotInitiator {
                    operation: data.operation_id.clone(),
                    action: "complete",
                });
            }
            let own = own_frames(data, &caller.id);
            registry::complete(data, &caller.id, &own, false)
        },
    )
    .await?;
    log(
        &state,
        &op,
        &[(LogLevel::Info, "OPERATION_COMPLETED".into())],
    )
    .await;
    state.store.archive(&op).await?;
    Ok(Json(json!({"success": true})))
}

/// Call ids of the frames `me` holds.
fn own_frames(data: &LedgerData, me: &ParticipantId) -> Vec<CallId> {
    data.call_frames
        .iter()
        .filter(|f| &f.participant_id == me)
        .map(|f| f.call_id.clone())
        .collect()
}
