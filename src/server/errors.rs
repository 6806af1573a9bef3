//! Error answers: every failure is one `{"error": "..."}` line with a status that says
//! what went wrong, never a panic and never a text/plain body.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::store::remote::wire::ErrorBody;

/// A failed request: its status and its one-line message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidId { .. } | Error::Invalid { .. } | Error::TempPathRefused { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::OperationNotFound(_) | Error::CallNotFound { .. } => StatusCode::NOT_FOUND,
            // The request is valid but the operation's state refuses it.
            Error::OperationExists(_)
            | Error::CallExists { .. }
            | Error::OperationEnded { .. }
            | Error::OperationFailed { .. }
            | Error::Fenced { .. }
            | Error::ParticipantInUse { .. }
            | Error::NotInitiator { .. }
            | Error::OpenCalls { .. }
            | Error::RunningCalls { .. }
            | Error::PendingCalls { .. }
            | Error::SessionClosed { .. } => StatusCode::CONFLICT,
            Error::Conflict { .. } => StatusCode::PRECONDITION_FAILED,
            Error::Unavailable { .. } | Error::LockTimeout { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_error(self.status, &self.message)
    }
}

/// A `{"error": message}` response.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_vec(&ErrorBody {
        error: message.to_string(),
    })
    .unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The router's answer to an unknown path.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such endpoint")
}

/// The router's answer to a known path with a method it does not take (the `allow`
/// header the router adds is kept).
pub async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Outermost layer: any error answer that is not JSON yet (a limit, a timeout, a
/// rejection of a layer) becomes a `{"error": ...}` line with the same status.
pub async fn errors_as_json(request: axum::extract::Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 || is_json(&response) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        StatusCode::REQUEST_TIMEOUT => "request timed out".to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let fresh = json_error(status, &message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (_, body) = fresh.into_parts();
    Response::from_parts(parts, Body::new(body))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
