//! Temp resources of an operation: checked at registration, deleted through the one
//! removal function, and every refusal or failure written to the operation log.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LogLevel;
use crate::store::StoreLocation;
use crate::temp_path::{self, Protected};

use super::LedgerInner;

/// The ledger directory of a file ledger (its deletion is refused like the home's).
pub(crate) fn ledger_dir(inner: &LedgerInner) -> Option<PathBuf> {
    match inner.store.location() {
        StoreLocation::Dir(dir) => Some(dir),
        StoreLocation::Url(_) | StoreLocation::Etcd { .. } | StoreLocation::Memory => None,
    }
}

/// The refusal rules as they stand now, for this ledger.
pub(crate) fn protected(inner: &LedgerInner) -> Protected {
    Protected::new(ledger_dir(inner).as_deref())
}

/// `path` in registered form, or the error that refuses it.
pub(crate) fn registrable(inner: &LedgerInner, path: &Path) -> Result<PathBuf> {
    let path = temp_path::normalise(path)?;
    protected(inner)
        .check(&path)
        .map_err(|why| Error::TempPathRefused {
            path: path.clone(),
            reason: why.to_string(),
        })?;
    Ok(path)
}

/// Delete temp resources given in their stored form; log what was refused or failed.
/// Returns those that are gone now (deleted, or not there), for reports.
pub(crate) async fn delete_stored(
    inner: &LedgerInner,
    op: &OperationId,
    stored: &[String],
) -> Vec<String> {
    let mut gone = Vec::new();
    if stored.is_empty() {
        return gone;
    }
    let protected = protected(inner);
    for s in stored {
        let (path, outcome) = temp_path::remove_stored(s, &protected);
        report(inner, op, &path, &outcome).await;
        if outcome.is_gone() {
            gone.push(s.clone());
        }
    }
    gone
}

/// Delete temp resources given as paths; log what was refused or failed.
pub(crate) async fn delete_paths(inner: &LedgerInner, op: &OperationId, paths: &[PathBuf]) {
    if paths.is_empty() {
        return;
    }
    let protected = protected(inner);
    for path in paths {
        let outcome = temp_path::remove(path, &protected);
        report(inner, op, path, &outcome).await;
    }
}

async fn report(inner: &LedgerInner, op: &OperationId, path: &Path, outcome: &temp_path::Removal) {
    if let Some(line) = outcome.report(path) {
        tracing::warn!(operation = %op, "{line}");
        if let Err(e) = inner.log(op, LogLevel::Warning, &line).await {
            tracing::debug!(operation = %op, error = %e, "log line not written");
        }
    }
}

impl super::Ledger {
    /// The form `path` would be registered in as a temp resource of this ledger, or the
    /// error that refuses it. Lets a caller check every path before registering any.
    pub fn temp_resource_path(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        registrable(&self.inner, path.as_ref())
    }
}
