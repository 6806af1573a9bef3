//! What a run saw: every participant's events, the faults injected, how each process
//! ended, the operation's final state, which temp files remain. The checker compares it
//! with the scenario's expectation; the report shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitStatus;

use crate::model::OperationState;

use super::protocol::Event;
use super::scenario::{ExitExpect, FaultKind};

/// A fault as it was injected.
#[derive(Clone, Debug, PartialEq)]
pub struct Injected {
    pub participant: String,
    pub kind: FaultKind,
    pub point: String,
    /// When (Unix nanoseconds).
    pub at: u64,
    /// False when the signal could not be delivered (the process was gone).
    pub delivered: bool,
}

/// How a participant's process ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ended {
    Exit(ExitExpect),
    /// Still running at the end: killed by the runner (a failure of the scenario).
    Leftover,
}

impl Ended {
    pub fn from_status(status: ExitStatus) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Ended::Exit(ExitExpect::Code(c)),
            (None, Some(s)) => Ended::Exit(ExitExpect::Signal(s)),
            (None, None) => Ended::Leftover,
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exit(e) => write!(f, "{e}"),
            Ended::Leftover => write!(f, "left running (killed by the runner)"),
        }
    }
}

/// Everything one run observed.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Where the operation lived (`file DIR`, `server URL`, `etcd URLS PREFIX`).
    pub ledger: String,
    /// Participants in the order they were started.
    pub started: Vec<String>,
    pub events: Vec<(String, Event)>,
    pub faults: Vec<Injected>,
    /// The operation's final state; `None` when it was never created.
    pub state: Option<OperationState>,
    pub reason: Option<String>,
    /// When the runner saw the operation leave the live ledger (Unix nanoseconds).
    pub archived_at: Option<u64>,
    /// The failure's detection and the removal of its frames, as the ledger recorded
    /// them (Unix nanoseconds).
    pub ledger_detected_at: Option<u64>,
    pub ledger_removed_at: Option<u64>,
    pub ended: BTreeMap<String, Ended>,
    /// Temp file name → whether it still exists.
    pub temps_exist: BTreeMap<String, bool>,
    /// The open calls (frame descriptions) read from the ledger while parallel calls
    /// were all open.
    pub open_together: Vec<BTreeSet<String>>,
    /// Where the run stopped early, and why (a fault, or something unexpected).
    pub notes: Vec<String>,
    /// Problems of the run itself: a step that never came, a participant's error.
    pub problems: Vec<String>,
    /// The last lines of each participant's stderr.
    pub stderr: BTreeMap<String, Vec<String>>,
    /// When the run started and ended (Unix nanoseconds).
    pub started_at: u64,
    pub finished_at: u64,
}

impl Observed {
    /// Participants hit by a crash, a hang or an abort: their own observations are not
    /// judged (they were killed, stopped or interrupted).
    pub fn faulted(&self) -> BTreeSet<String> {
        self.faults
            .iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    FaultKind::Crash | FaultKind::Hang | FaultKind::Abort
                )
            })
            .map(|f| f.participant.clone())
            .collect()
    }

    /// The first time `participant` reported an event matching `pick`.
    pub fn first(&self, participant: &str, pick: impl Fn(&Event) -> bool) -> Option<u64> {
        self.events
            .iter()
            .filter(|(p, e)| p == participant && pick(e))
            .map(|(_, e)| e.at())
            .min()
    }

    /// Participants that reported an event matching `pick`.
    pub fn who(&self, pick: impl Fn(&Event) -> bool) -> BTreeSet<String> {
        self.events
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// When the first fault was injected.
    pub fn first_fault(&self) -> Option<u64> {
        self.faults.iter().map(|f| f.at).min()
    }

    /// The first sign, by a participant that was not faulted, that a fault was seen:
    /// `failed()`, `aborted()`, a callee's crash or a deadline.
    pub fn first_detection(&self) -> Option<u64> {
        let faulted = self.faulted();
        self.events
            .iter()
            .filter(|(p, _)| !faulted.contains(p))
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::Failed { .. }
                        | Event::Aborted { .. }
                        | Event::Detected { .. }
                        | Event::TimedOut { .. }
                )
            })
            .map(|(_, e)| e.at())
            .min()
    }

    /// Fault to first detection, in milliseconds.
    pub fn detection_ms(&self) -> Option<f64> {
        let (fault, seen) = (self.first_fault()?, self.first_detection()?);
        Some(millis_between(fault, seen))
    }

    /// From the failure's detection to the end of its cleanup, in milliseconds: as the
    /// ledger recorded them when it did, else from the first participant that saw it to
    /// the runner seeing the operation archived.
    pub fn cleanup_ms(&self) -> Option<f64> {
        if let (Some(detected), Some(removed)) = (self.ledger_detected_at, self.ledger_removed_at) {
            return Some(millis_between(detected, removed));
        }
        let (seen, archived) = (self.first_detection()?, self.archived_at?);
        Some(millis_between(seen, archived))
    }

    pub fn duration_ms(&self) -> f64 {
        millis_between(self.started_at, self.finished_at)
    }
}

fn millis_between(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1e6
}
