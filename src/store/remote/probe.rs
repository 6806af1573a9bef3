//! `GET {url}/status`: whether a ledger server answers at an address, for discovery.

use std::time::Duration;

use crate::error::{Error, Result};

use super::client::parse_url;
use super::wire::{SERVICE, StatusBody};

/// The status of the ledger server at `url`, within `timeout`; an error when nothing
/// answers there or what answers is not a ledger server.
pub async fn probe(url: &str, timeout: Duration) -> Result<StatusBody> {
    let base = parse_url(url)?;
    let unavailable = |reason: String| Error::Unavailable {
        location: base.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| unavailable(e.to_string()))?;
    let response = client
        .get(format!("{base}/status"))
        .send()
        .await
        .map_err(|e| unavailable(super::http::describe(&e)))?;
    if !response.status().is_success() {
        return Err(unavailable(format!(
            "/status answered {}",
            response.status()
        )));
    }
    let status: StatusBody = response
        .json()
        .await
        .map_err(|e| unavailable(format!("/status is not a ledger server's: {e}")))?;
    if status.service != SERVICE {
        return Err(unavailable(format!(
            "the service there is `{}`, not `{SERVICE}`",
            status.service
        )));
    }
    Ok(status)
}
