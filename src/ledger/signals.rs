//! The ledger's part in signal cleanup (see [`crate::cleanup`]).

use std::sync::Arc;

use crate::cleanup::{CleanupHandler, CleanupPhase};
use crate::error::Result;

use super::failure;
use super::shared::OpShared;

/// Register the operation's part of the signal cleanup with the process's handler. It
/// runs only if the application installed the handler ([`CleanupHandler::install`]) or
/// calls its cleanup itself; registering installs nothing.
///
/// On a signal, before the workers are stopped: the initiator sets the abort flag and the
/// interruption is recorded as the operation's failure (so it, and not a worker stopped
/// by it, is the reason). After they are stopped: cleanup finished and archived.
pub(crate) fn register_signal_cleanup(shared: &Arc<OpShared>) {
    let handler = CleanupHandler::global();
    let weak = Arc::downgrade(shared);
    let early = handler.register_phase(CleanupPhase::Early, move |sig| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(shared) = weak.upgrade() {
                failure::record_interruption(&shared, sig).await;
            }
        })
    });
    let weak = Arc::downgrade(shared);
    let late = handler.register_phase(CleanupPhase::Late, move |_| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(shared) = weak.upgrade() {
                failure::finish_interruption(shared).await;
            }
        })
    });
    // Job control, should the program opt in (`CleanupHandler::install_job_control`).
    let weak = Arc::downgrade(shared);
    let pause = handler.register_phase(CleanupPhase::Pause, move |_| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(shared) = weak.upgrade() {
                warn_unrecorded(&shared, "pause", record_pause(&shared, true).await);
            }
        })
    });
    let weak = Arc::downgrade(shared);
    let resume = handler.register_phase(CleanupPhase::Resume, move |_| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(shared) = weak.upgrade() {
                warn_unrecorded(&shared, "resume", record_pause(&shared, false).await);
            }
        })
    });
    shared.local().cleanup_ids = vec![early, late, pause, resume];
}

/// Job control goes on when the ledger cannot be written; what was not recorded is said.
fn warn_unrecorded(shared: &OpShared, what: &str, result: Result<()>) {
    if let Err(e) = result
        && !failure::is_gone(&e)
    {
        tracing::warn!(operation = %shared.id, error = %e, "{what} not recorded in the ledger");
    }
}

/// Record (`true`) or clear this participant's `pausedAt`; the write is a heartbeat too.
pub(crate) async fn record_pause(shared: &Arc<OpShared>, paused: bool) -> Result<()> {
    let me = shared.ledger.config.participant.clone();
    shared
        .modify(|data, now| {
            super::core::registry::record_pause(data, &me, paused, now);
            Ok(())
        })
        .await
        .map(|_| ())
}
