//! `/operation/heartbeat`: a beat of the client that sends it, stamped with the server's
//! clock (so clock skew between machines cannot make anyone look stale), refreshing its
//! registration and its frames only (never another client's: the original's server kept
//! every frame of its participant id fresh, masking crashes). The ages of the others
//! are judged the way every participant judges them, with the server's clock. A beat is
//! a refresh: the store keeps no history entry for it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::clock::age_ms;
use crate::error::Error;
use crate::ledger::core::frames;
use crate::ledger::{DEFAULT_MAX_PAUSE, DEFAULT_STALE_THRESHOLD};
use crate::presence::{Ages, FilePresence, Presence};
use crate::store::WriteKind;

use super::super::state::AppState;
use super::act::act;
use super::caller::{Sent, Unclaimed};
use super::request::ApiResult;

/// Liveness as judged from the server: its host, the one stale threshold, its clock.
pub(crate) fn presence(state: &AppState) -> FilePresence {
    FilePresence::new(
        DEFAULT_STALE_THRESHOLD,
        DEFAULT_MAX_PAUSE,
        state.clock.clone(),
    )
}

pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Sent { op, claims, .. } = Sent::read(&headers, &body)?;
    let acted = act(
        &state,
        &op,
        &claims,
        &Unclaimed::SoleOriginalClient,
        WriteKind::Refresh,
        |data, caller, now| {
            frames::beat(data, &caller.id, now);
            Ok(())
        },
    )
    .await;
    let acted = match acted {
        Ok(acted) => acted,
        // Archived since (completed, or failed and cleaned up): the original's answer for
        // a ledger that is gone, which its client reports as `ledgerNotFound`.
        Err(Error::OperationNotFound(_)) if state.store.read_archived(&op).await.is_ok() => {
            return Ok(Json(json!({"success": false, "reason": "No ledger"})));
        }
        Err(e) => return Err(e.into()),
    };
    let Ages { ages, stale } = presence(&state).ages(&acted.data, &acted.caller.id);
    let data = &acted.data;
    Ok(Json(json!({
        "success": true,
        "abortFlag": data.aborted,
        "callFrameCount": data.call_frames.len(),
        "tempResourceCount": data.temp_resources.len(),
        "heartbeatAgeMs": age_ms(acted.now, acted.last_heartbeat_before),
        "isStale": !stale.is_empty(),
        "participants": ages.keys().collect::<Vec<_>>(),
        "participantHeartbeatAges": ages,
        "staleParticipants": stale,
        "operationState": data.operation_state,
        "sessionId": acted.caller.epoch,
    })))
}
