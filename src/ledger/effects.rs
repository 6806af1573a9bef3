//! The I/O edge of the core's decisions: carries out [`Effect`]s after their change was
//! written, in order.

use std::sync::Arc;

use super::core::Effect;
use super::shared::OpShared;

/// Carry out `effects` for this participant's operation.
pub(crate) async fn run(shared: &Arc<OpShared>, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Log(level, line) => shared.log_quietly(level, &line).await,
            Effect::StopWorkers(workers) => {
                if !workers.is_empty() {
                    let grace = super::crash::grace_of(shared);
                    super::crash::stop_workers(&shared.id, &workers, grace).await;
                }
            }
            Effect::DeleteTemps(paths) => {
                super::temps::delete_stored(&shared.ledger, &shared.id, &paths).await;
            }
            Effect::Coordinate => super::failure::start_coordination(shared),
            Effect::Archive => super::failure::archive(shared).await,
        }
    }
}
