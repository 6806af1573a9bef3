//! The ledger's part in signal cleanup (see [`crate::cleanup`]).

use std::sync::Arc;

use crate::cleanup::{CleanupHandler, CleanupPhase};
use crate::error::Result;

use super::failure;
use super::shared::OpShared;

/// On a signal, before the workers are stopped: the initiator sets the abort flag and the
/// interruption is recorded as the operation's failure (so it, and not a worker stopped
/// by it, is the reason). After they are stopped: cleanup finished and archived.
pub(crate) fn register_signal_cleanup(shared: &Arc<OpShared>) {
    let handler = CleanupHandler::global();
    if let Err(e) = handler.install() {
        tracing::warn!(error = %e, "signal cleanup not installed");
        return;
    }
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
                let _ = record_pause(&shared, true).await;
            }
        })
    });
    let weak = Arc::downgrade(shared);
    let resume = handler.register_phase(CleanupPhase::Resume, move |_| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(shared) = weak.upgrade() {
                let _ = record_pause(&shared, false).await;
            }
        })
    });
    shared.local().cleanup_ids = vec![early, late, pause, resume];
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
