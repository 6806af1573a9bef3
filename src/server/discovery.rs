//! What lets clients find the server: `GET /status` (and `/health`) answered without a
//! token, and the `server.json` file (url, pid) written into the ledger directory on
//! start and removed on a clean exit.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::error::Result;
use crate::store::remote::ServerFile;
use crate::store::remote::wire::{SERVICE, StatusBody};

use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/status", get(status))
        .route("/health", get(health))
}

async fn status(State(state): State<AppState>) -> Json<StatusBody> {
    Json(StatusBody {
        service: SERVICE.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        status: "ok".to_string(),
        port: state.port,
        base_path: state.base_path.clone(),
        timestamp: state
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The discovery file of a running server; removed when dropped (a clean exit), only if
/// it still names this process (a second server may have taken the directory over).
#[derive(Debug)]
pub struct DiscoveryFile {
    path: PathBuf,
    pid: u32,
}

impl DiscoveryFile {
    /// Write `{dir}/server.json` for this process serving `url`.
    pub fn write(dir: &Path, url: &str) -> Result<DiscoveryFile> {
        let pid = std::process::id();
        let path = ServerFile::write(dir, url, pid)?;
        Ok(DiscoveryFile { path, pid })
    }
}

impl Drop for DiscoveryFile {
    fn drop(&mut self) {
        if let Ok(found) = ServerFile::read_file(&self.path)
            && found.pid == self.pid
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
