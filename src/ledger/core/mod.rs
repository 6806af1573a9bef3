//! The operation's state transitions, as plain functions over [`LedgerData`].
//!
//! Design notes:
//!
//! - **No I/O here.** Nothing in this module reads a clock, a store, `/proc` or a pidfd,
//!   spawns a task or signals a process. Time comes in as `now`; facts that need the
//!   system (is this participant's process alive?) are computed by the caller before the
//!   change and passed in ([`Live`], [`registry::Holder`]). A transition that finds it
//!   needs a fact it was not given says so instead of guessing ([`registry::Joining::Judge`]).
//! - **Changes are closures' content.** The I/O edge in `src/ledger/` calls these functions
//!   inside the store's read-change-write; they may run more than once (a backend built on
//!   compare-and-swap retries), so each call computes its result from `data` alone.
//! - **Decisions are data.** What must happen outside the ledger after a change (stop
//!   workers, delete temp resources, write log lines, coordinate, archive) is returned as
//!   [`Effect`]s or as plain decision values; the edge executes them after the write.
//! - **One place decides that an operation fails:** [`failure::fail`]. Calls failing, crash
//!   declarations, interruptions and recovery all go through it.
//! - **One sweep of this host's temp resources:** [`temps::sweep`], used by contained
//!   crashes, the coordinator's removal and recovery.
//! - The ledger read is input, never proof: deciding to delete or to signal here only
//!   narrows what the edge may do; the removal function and the process layer still prove
//!   each path and process before they act.

pub(crate) mod cleanup;
pub(crate) mod crash;
pub(crate) mod failure;
pub(crate) mod frames;
pub(crate) mod recovery;
pub(crate) mod registry;
pub(crate) mod temps;

#[cfg(test)]
pub(crate) mod fixtures;

use std::collections::BTreeSet;

use crate::ids::{CallId, ParticipantId};
use crate::model::{LedgerData, LogLevel, ProcessRecord};

/// Something the edge does after a change was written, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Effect {
    /// A line for the operation log.
    Log(LogLevel, String),
    /// Stop these recorded worker groups (each only on proof).
    StopWorkers(Vec<ProcessRecord>),
    /// Hand these stored temp paths to the removal function.
    DeleteTemps(Vec<String>),
    /// This participant coordinates the failure cleanup from now on.
    Coordinate,
    /// Archive the operation (it has ended).
    Archive,
}

/// This process as the judge of whose temp resources are its own to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Here {
    pub host: String,
    pub uid: u32,
}

/// Participants found alive, computed outside before a decision that depends on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Live(pub BTreeSet<ParticipantId>);

impl Live {
    pub fn contains(&self, id: &ParticipantId) -> bool {
        self.0.contains(id)
    }

    /// Every id whose liveness the decisions of this module may ask about: registered
    /// participants and owners of frames.
    pub fn candidates(data: &LedgerData) -> BTreeSet<ParticipantId> {
        data.participants
            .keys()
            .chain(data.call_frames.iter().map(|f| &f.participant_id))
            .cloned()
            .collect()
    }
}

/// Call ids as written in log lines and errors: `a, b, c`.
pub(crate) fn join_ids(ids: &[CallId]) -> String {
    ids.iter()
        .map(CallId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
