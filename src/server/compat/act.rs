//! Changing an operation on behalf of a client: the caller is resolved on the data read
//! (see `caller.rs`), passes the fencing check every participant's write passes
//! (`core::registry::admit_writer`: refused once the operation ended or the caller was
//! declared crashed; counts as a heartbeat, stamped with the server's clock), then the
//! endpoint's change runs, all inside the store's read-change-write, so a change may run
//! again after a conflict and computes everything from the data it is handed.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::ledger::core::registry;
use crate::model::{LedgerData, LogLevel, log_line};
use crate::store::{LogKind, WriteKind};

use super::super::state::AppState;
use super::caller::{Caller, Claims, Unclaimed, resolve};

/// What a change did, as written.
#[derive(Debug)]
pub(crate) struct Acted {
    pub data: LedgerData,
    pub caller: Caller,
    /// The operation's `lastHeartbeat` before this write.
    pub last_heartbeat_before: Timestamp,
    pub now: Timestamp,
}

/// Apply `change` as the caller the request names.
pub(crate) async fn act(
    state: &AppState,
    op: &OperationId,
    claims: &Claims,
    unclaimed: &Unclaimed,
    kind: WriteKind,
    mut change: impl FnMut(&mut LedgerData, &Caller, Timestamp) -> Result<()> + Send,
) -> Result<Acted> {
    let now = state.clock.now();
    let mut seen = None;
    let mut apply = |data: &mut LedgerData| {
        let before = data.last_heartbeat;
        let caller = resolve(data, claims, unclaimed)?;
        registry::admit_writer(data, op, &caller.id, caller.epoch, now)?;
        change(data, &caller, now)?;
        seen = Some((caller, before));
        Ok(())
    };
    let data = match kind {
        WriteKind::Change => state.store.modify(op, &mut apply).await?,
        WriteKind::Refresh => state.store.refresh(op, &mut apply).await?,
    };
    let (caller, last_heartbeat_before) = seen.ok_or_else(|| {
        Error::invalid(
            format!("operation `{op}`"),
            "the store reported a change that never ran",
        )
    })?;
    Ok(Acted {
        data,
        caller,
        last_heartbeat_before,
        now,
    })
}

/// Append lines to the operation log, stamped with the server's clock. The change they
/// tell of is written already: a line that cannot be appended is reported to the
/// server's log, not to the client.
pub(crate) async fn log(state: &AppState, op: &OperationId, lines: &[(LogLevel, String)]) {
    for (level, message) in lines {
        let line = log_line(&state.clock.now(), *level, message);
        if let Err(e) = state.store.append_log(op, LogKind::Main, &line).await {
            tracing::warn!(operation = %op, error = %e, "log line not written");
        }
    }
}
