//! One request to the ledger server, the way every call of the client store makes it:
//! the token, a per-request deadline, transport errors and 502/503/504 retried with
//! backoff inside that deadline, and the server's error answers turned into this
//! crate's errors.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::time::Instant;

use crate::error::{Error, Result};

use super::wire::ErrorBody;

/// How long an idle connection is kept for reuse (below the server's idle limit).
const POOL_IDLE: Duration = Duration::from_secs(5);

/// Timing of the client's requests.
#[derive(Clone, Copy, Debug)]
pub struct RequestTiming {
    /// Longest time one call may take, retries included.
    pub deadline: Duration,
    /// Longest time to open a connection.
    pub connect: Duration,
    /// First pause before a retry; each next one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RequestTiming {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            connect: Duration::from_secs(1),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// The connection to one server.
#[derive(Clone, Debug)]
pub struct Http {
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
    pub timing: RequestTiming,
}

/// How an answer came back: a success, or an error status with the server's message.
pub enum Answer {
    Ok(Response),
    Refused {
        status: StatusCode,
        message: String,
        etag: Option<String>,
        /// The answer's body (a 412 may carry the current operation).
        body: Vec<u8>,
    },
}

impl Http {
    pub fn new(base: String, token: Option<String>, timing: RequestTiming) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(timing.connect)
            // Idle connections are reused for the next request, and dropped before the
            // server closes them (it keeps an idle one for its header time, 10 s).
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Unavailable {
                location: base.clone(),
                reason: format!("cannot build an http client: {e}"),
            })?;
        Ok(Self {
            base,
            token,
            client,
            timing,
        })
    }

    /// A request to `path` with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Send what `build` makes (built again for each attempt), retrying transport errors
    /// and 502/503/504 with backoff until the deadline; `retried` tells whether an
    /// earlier attempt may have reached the server.
    pub async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
        retried: &mut bool,
    ) -> Result<Answer> {
        let deadline = Instant::now() + self.timing.deadline;
        let mut pause = self.timing.first_backoff;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = build()
                .timeout(left.max(Duration::from_millis(1)))
                .send()
                .await;
            let failure = match outcome {
                Ok(response) if is_transient(response.status()) => {
                    format!("server answered {}", response.status())
                }
                Ok(response) if response.status().is_success() => {
                    return Ok(Answer::Ok(response));
                }
                Ok(response) => return Ok(refused(response).await),
                Err(e) => describe(&e),
            };
            *retried = true;
            let now = Instant::now();
            if now + pause >= deadline {
                return Err(Error::Unavailable {
                    location: self.base.clone(),
                    reason: format!("{failure} (gave up after {:?})", self.timing.deadline),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.timing.max_backoff);
        }
    }

    /// An error answer of a request about no particular operation.
    pub fn refused(&self, status: StatusCode, message: String) -> Error {
        if status == StatusCode::BAD_REQUEST {
            return Error::invalid(format!("request to `{}`", self.base), message);
        }
        Error::ServerRefused {
            location: self.base.clone(),
            status: status.as_u16(),
            message,
        }
    }

    /// The body of a success as JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(&self, response: Response) -> Result<T> {
        let bytes = response.bytes().await.map_err(|e| Error::Unavailable {
            location: self.base.clone(),
            reason: describe(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::ServerRefused {
            location: self.base.clone(),
            status: 200,
            message: format!("unreadable answer: {e}"),
        })
    }
}

fn is_transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

async fn refused(response: Response) -> Answer {
    let status = response.status();
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (message, body) = match response.bytes().await {
        Ok(bytes) => (
            serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
            bytes.to_vec(),
        ),
        Err(e) => (describe(&e), Vec::new()),
    };
    Answer::Refused {
        status,
        message,
        etag,
        body,
    }
}

/// A transport error in one line.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}
