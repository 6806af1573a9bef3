//! The scheduler of `run`: workers form a DAG through `after`; ready workers start up to
//! `-j` at a time; a failure either stops the others (default) or, with `--keep-going`,
//! only skips what depends on it; failed attempts are retried.
//!
//! It knows nothing of processes or ledgers: it is handed a `start` closure that returns
//! the worker's outcome as a future and a way to stop it, so it is tested with plain
//! futures.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

/// How one attempt of a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Timeout,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Why running workers are stopped; a stopped worker reports it as its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Timeout,
}

impl StopReason {
    pub fn status(self) -> Status {
        match self {
            StopReason::Cancelled => Status::Cancelled,
            StopReason::Timeout => Status::Timeout,
        }
    }
}

/// A request to a running worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// The stop ladder: SIGTERM, grace, SIGKILL.
    Graceful(StopReason),
    /// SIGKILL at once (second Ctrl+C).
    Kill,
}

/// From outside the schedule: a signal, an abort, the run's timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Start nothing more and stop what runs.
    Stop(StopReason),
    /// Kill what runs at once.
    Kill,
}

/// A worker as the scheduler sees it.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// Indexes of the workers it waits for.
    pub after: Vec<usize>,
    /// Attempts after the first one.
    pub retries: u32,
    /// Whether its failure fails the run (and stops the others unless keep-going).
    pub fatal: bool,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A started attempt: its outcome, and how to stop it.
pub struct Started {
    pub outcome: BoxFuture<Status>,
    pub stop: Box<dyn Fn(StopMode) + Send + Sync>,
}

/// How a worker ended overall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Final {
    Done {
        status: Status,
        attempts: u32,
    },
    /// Never started: what it waits for failed, or the run was stopped first.
    Skipped,
}

/// The result of a whole schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub finals: Vec<Final>,
    /// A fatal worker did not succeed.
    pub failed: bool,
    /// Stopped from outside.
    pub interrupted: Option<Interrupt>,
}

enum State {
    Waiting,
    Running {
        attempt: u32,
    },
    /// Failed, with another attempt queued.
    Retrying {
        status: Status,
        attempt: u32,
    },
    Done(Final),
}

/// The DAG and its policy.
pub struct Schedule {
    pub nodes: Vec<Node>,
    pub jobs: usize,
    pub keep_going: bool,
}

impl Schedule {
    /// Run every worker through `start(index, attempt)` (attempts count from 1) until all
    /// have ended, been skipped, or the run was stopped.
    pub async fn run(
        self,
        mut start: impl FnMut(usize, u32) -> Started,
        interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
    ) -> Report {
        let n = self.nodes.len();
        let jobs = self.jobs.max(1);
        let mut state: Vec<State> = (0..n).map(|_| State::Waiting).collect();
        let mut waiting_on: Vec<usize> = self.nodes.iter().map(|node| node.after.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, node) in self.nodes.iter().enumerate() {
            for &d in &node.after {
                dependents[d].push(i);
            }
        }
        let mut ready: VecDeque<(usize, u32)> = (0..n)
            .filter(|&i| waiting_on[i] == 0)
            .map(|i| (i, 1))
            .collect();
        let mut stops: HashMap<usize, Box<dyn Fn(StopMode) + Send + Sync>> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Status)>();
        let mut failed = false;
        let mut stopping: Option<StopReason> = None;
        let mut interrupted = None;
        let mut listening = true;

        loop {
            while stopping.is_none() && stops.len() < jobs {
                let Some((i, attempt)) = ready.pop_front() else {
                    break;
                };
                let started = start(i, attempt);
                state[i] = State::Running { attempt };
                stops.insert(i, started.stop);
                let tx = done_tx.clone();
                let outcome = started.outcome;
                tokio::spawn(async move {
                    let status = outcome.await;
                    let _ = tx.send((i, status));
                });
            }
            if stops.is_empty() {
                break;
            }
            tokio::select! {
                Some((i, status)) = done_rx.recv() => {
                    stops.remove(&i);
                    let State::Running { attempt } = state[i] else { continue };
                    let node = &self.nodes[i];
                    let retry = matches!(status, Status::Failed | Status::Timeout)
                        && attempt <= node.retries
                        && stopping.is_none();
                    if retry {
                        state[i] = State::Retrying { status, attempt };
                        ready.push_front((i, attempt + 1));
                        continue;
                    }
                    state[i] = State::Done(Final::Done { status, attempts: attempt });
                    let satisfied = status == Status::Ok || (!node.fatal && stopping.is_none());
                    if satisfied {
                        for &dep in &dependents[i] {
                            waiting_on[dep] -= 1;
                            if waiting_on[dep] == 0 && matches!(state[dep], State::Waiting) {
                                ready.push_back((dep, 1));
                            }
                        }
                    } else if stopping.is_none() {
                        failed = true;
                        skip_dependents(i, &dependents, &mut state);
                        if !self.keep_going {
                            stopping = Some(StopReason::Cancelled);
                            for stop in stops.values() {
                                stop(StopMode::Graceful(StopReason::Cancelled));
                            }
                        }
                    }
                }
                msg = interrupts.recv(), if listening => {
                    match msg {
                        None => listening = false,
                        Some(Interrupt::Stop(reason)) => {
                            interrupted.get_or_insert(Interrupt::Stop(reason));
                            if stopping.is_none() {
                                stopping = Some(reason);
                                for stop in stops.values() {
                                    stop(StopMode::Graceful(reason));
                                }
                            }
                        }
                        Some(Interrupt::Kill) => {
                            interrupted = Some(Interrupt::Kill);
                            stopping.get_or_insert(StopReason::Cancelled);
                            for stop in stops.values() {
                                stop(StopMode::Kill);
                            }
                        }
                    }
                }
            }
        }
        let finals = state
            .into_iter()
            .map(|s| match s {
                State::Done(f) => f,
                State::Retrying { status, attempt } => Final::Done {
                    status,
                    attempts: attempt,
                },
                State::Waiting | State::Running { .. } => Final::Skipped,
            })
            .collect();
        Report {
            finals,
            failed,
            interrupted,
        }
    }
}

/// Mark everything that waits (directly or not) on `i` as skipped.
fn skip_dependents(i: usize, dependents: &[Vec<usize>], state: &mut [State]) {
    let mut todo = dependents[i].clone();
    while let Some(d) = todo.pop() {
        if matches!(state[d], State::Waiting) {
            state[d] = State::Done(Final::Skipped);
            todo.extend(dependents[d].iter().copied());
        }
    }
}

#[cfg(test)]
mod tests;
