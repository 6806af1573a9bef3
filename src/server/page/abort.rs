//! `POST /page/api/operations/{op}/abort`: the one write of the status page. It sets the
//! abort flag as `tom-ledger abort` does (participants on the ledger's machine learn of it
//! at once through change notification, remote ones through the event stream) and logs
//! who asked. Like every `/page/api/` route it needs the bearer token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::error::Error;
use crate::model::{LedgerData, LogLevel, log_line};
use crate::store::LogKind;

use super::super::errors::ApiError;
use super::super::native::operation;
use super::super::state::AppState;

/// The participant named in the log line of an abort from the page.
const REQUESTER: &str = "status-page";

#[derive(Debug, Serialize)]
pub struct Aborted {
    pub operation: String,
    pub aborted: bool,
}

pub async fn abort(
    State(state): State<AppState>,
    Path(op): Path<String>,
) -> Result<Json<Aborted>, ApiError> {
    let op = operation(&op)?;
    let now = state.clock.now();
    let written = state
        .store
        .modify(&op, &mut |data: &mut LedgerData| {
            if data.operation_state.is_final() {
                return Err(Error::OperationEnded {
                    operation: data.operation_id.clone(),
                    state: data.operation_state.to_string(),
                });
            }
            data.aborted = true;
            data.last_heartbeat = now;
            Ok(())
        })
        .await;
    match written {
        Ok(_) => {}
        // An archived operation has ended too.
        Err(e @ Error::OperationEnded { .. }) => {
            return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    let line = log_line(
        &now,
        LogLevel::Warning,
        &format!("ABORT_REQUESTED by={REQUESTER}"),
    );
    if let Err(e) = state.store.append_log(&op, LogKind::Main, &line).await {
        tracing::debug!(operation = %op, error = %e, "abort log line not written");
    }
    Ok(Json(Aborted {
        operation: op.to_string(),
        aborted: true,
    }))
}
