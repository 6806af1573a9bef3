//! The runner: one scenario, start to end. It starts each participant as its own
//! process when its first call comes up, walks the call tree depth first (telling each
//! participant to open, answer and end its calls, and waiting for it to say it did),
//! injects each fault when the run reaches its point, and after the last step or a fault
//! waits for the end: every process gone (a hung one is continued once the others are
//! done with it), the operation archived. Whatever is still running then is killed and
//! reported. It never sleeps to wait for something; only `--pace` keeps calls open longer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::ledger::Ledger;

use super::backend::{Backend, Prepared};
use super::observed::{Ended, Observed};
use super::processes::{Message, Proc};
use super::protocol::{Command, Event, now_nanos};
use super::scenario::{Point, Scenario};
use super::timing::Timing;

/// How a scenario is run.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// The `tom-ledger` executable that runs participants (`simulate-participant`).
    pub exe: PathBuf,
    pub backend: Backend,
    pub timing: Timing,
    /// Where each scenario's scratch directory is made (and removed afterwards).
    pub scratch_root: PathBuf,
    /// The etcd backend's cluster (client URLs); `None`: each scenario starts a member
    /// of its own in its scratch directory.
    pub etcd_endpoints: Option<Vec<String>>,
}

impl RunnerOptions {
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        RunnerOptions {
            exe: exe.into(),
            backend: Backend::File,
            timing: Timing::fast(),
            scratch_root: std::env::temp_dir(),
            etcd_endpoints: None,
        }
    }
}

/// Why the walk stopped before its end.
pub(super) enum Stop {
    /// A fault was injected: the rest is the scenario's outcome.
    Faulted,
    /// Something else ended it (a participant failed, exited, or never answered).
    Unexpected(String),
}

/// Run one scenario; fails only when it cannot be set up (scratch directory, backend).
pub async fn run_scenario(scenario: &Scenario, options: &RunnerOptions) -> Result<Observed> {
    scenario
        .validate()
        .map_err(|reason| Error::invalid(format!("scenario `{}`", scenario.name), reason))?;
    let scratch = make_scratch(&options.scratch_root, &scenario.name)?;
    run_in(scenario, options, &scratch.0).await
}

/// The scenario's scratch directory, removed with everything in it when the run ends or
/// is dropped half-way (its participants are killed as their handles go). Made by us
/// just now (created, never found): ours to remove.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run_in(scenario: &Scenario, options: &RunnerOptions, scratch: &Path) -> Result<Observed> {
    let prepared = options
        .backend
        .prepare(scratch, &options.exe, options.etcd_endpoints.as_deref())
        .await?;
    let ledger = prepared.label();
    let temps = scratch.join("temps");
    std::fs::create_dir(&temps).map_err(|e| Error::io("create", &temps, e))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut run = Run {
        scenario,
        options,
        scratch: scratch.to_path_buf(),
        prepared,
        procs: BTreeMap::new(),
        tx,
        rx,
        observed: Observed {
            ledger,
            started_at: now_nanos(),
            ..Observed::default()
        },
        operation: None,
        reader: None,
        injected: BTreeSet::new(),
        closed: BTreeSet::new(),
        dismissed: BTreeSet::new(),
    };
    match run.walk().await {
        Ok(()) => {}
        Err(Stop::Faulted) => {}
        Err(Stop::Unexpected(why)) => run.observed.notes.push(why),
    }
    run.settle().await;
    run.collect().await;
    // What the backend started for the scenario goes before its scratch directory.
    run.prepared.stop().await;
    run.observed.finished_at = now_nanos();
    Ok(run.observed)
}

/// A fresh scratch directory of our own (0700), never one that existed before.
fn make_scratch(root: &Path, name: &str) -> Result<Scratch> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = root.join(format!(
        "tom-ledger-sim-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io("create", &dir, e))?;
    Ok(Scratch(dir))
}

pub(super) struct Run<'a> {
    pub(super) scenario: &'a Scenario,
    pub(super) options: &'a RunnerOptions,
    pub(super) scratch: PathBuf,
    pub(super) prepared: Prepared,
    pub(super) procs: BTreeMap<String, Proc>,
    pub(super) tx: mpsc::UnboundedSender<Message>,
    pub(super) rx: mpsc::UnboundedReceiver<Message>,
    pub(super) observed: Observed,
    pub(super) operation: Option<OperationId>,
    pub(super) reader: Option<Ledger>,
    /// Indexes of the scenario's faults already injected.
    pub(super) injected: BTreeSet<usize>,
    /// Participants whose stdout closed.
    pub(super) closed: BTreeSet<String>,
    /// Participants told to leave or complete: their end is expected.
    pub(super) dismissed: BTreeSet<String>,
}

impl<'a> Run<'a> {
    pub(super) fn timing(&self) -> &Timing {
        &self.options.timing
    }

    pub(super) fn temp_path(&self, name: &str) -> PathBuf {
        self.scratch.join("temps").join(name)
    }

    pub(super) fn response_file(&self, call: &str) -> PathBuf {
        self.scratch.join(format!("{call}.response.json"))
    }

    /// Send a command, unless a fault was injected: the run goes its own way from there.
    pub(super) async fn send(
        &mut self,
        who: &str,
        command: Command,
    ) -> std::result::Result<(), Stop> {
        if !self.injected.is_empty() {
            return Err(Stop::Faulted);
        }
        let Some(proc) = self.procs.get_mut(who) else {
            return Err(Stop::Unexpected(format!("`{who}` was never started")));
        };
        if proc.send(&command).await {
            Ok(())
        } else {
            Err(Stop::Unexpected(format!(
                "`{who}` no longer takes commands"
            )))
        }
    }

    pub(super) fn events_len(&self) -> usize {
        self.observed.events.len()
    }

    /// Wait until `who` reports an event matching `pick` (at or after index `since`);
    /// returns its index. Stops at a fault, at anything that ends a participant's part,
    /// and after the step bound.
    pub(super) async fn wait_for(
        &mut self,
        since: usize,
        who: &str,
        what: &str,
        pick: impl Fn(&Event) -> bool,
    ) -> std::result::Result<usize, Stop> {
        let deadline = Instant::now() + self.timing().step_bound;
        loop {
            if let Some(i) = (since..self.events_len())
                .find(|i| self.observed.events[*i].0 == who && pick(&self.observed.events[*i].1))
            {
                return Ok(i);
            }
            if !self.injected.is_empty() {
                return Err(Stop::Faulted);
            }
            if let Some(why) = self.disruption(since) {
                return Err(Stop::Unexpected(format!(
                    "stopped waiting for `{who}` ({what}): {why}"
                )));
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) => self.on_message(message).await,
                Ok(None) => return Err(Stop::Unexpected("the event channel closed".into())),
                Err(_) => {
                    let message = format!(
                        "`{who}` did not report {what} within {:?}",
                        self.timing().step_bound
                    );
                    self.observed.problems.push(message.clone());
                    return Err(Stop::Unexpected(message));
                }
            }
        }
    }

    /// Something since `since` that ends the orderly walk.
    fn disruption(&self, since: usize) -> Option<String> {
        for (p, e) in &self.observed.events[since.min(self.events_len())..] {
            let what = match e {
                Event::Failed { reason, .. } => format!("saw the operation fail ({reason})"),
                Event::Aborted { .. } => "saw the abort".into(),
                Event::Gone { why, .. } => format!("lost the operation ({why})"),
                Event::CallFailed { call, message, .. } => format!("`{call}` failed: {message}"),
                Event::Error { message, .. } => format!("error: {message}"),
                Event::Exit { code, .. } => format!("exited with {code}"),
                _ => continue,
            };
            return Some(format!("`{p}` {what}"));
        }
        self.closed
            .iter()
            .find(|p| !self.dismissed.contains(*p))
            .map(|p| format!("`{p}` ended"))
    }

    pub(super) async fn on_message(&mut self, message: Message) {
        match message {
            Message::Event(who, event) => {
                let point = match &event {
                    Event::Ready { .. } => Some(Point::Joined(who.clone())),
                    Event::Started { call, .. } => Some(Point::Started(call.clone())),
                    Event::Ended { call, .. } => Some(Point::Ended(call.clone())),
                    Event::Cleanup { call, .. } => Some(Point::Cleanup(call.clone())),
                    _ => None,
                };
                if let Event::Error { message, .. } = &event {
                    self.observed
                        .problems
                        .push(format!("`{who}` reported an error: {message}"));
                }
                self.observed.events.push((who, event));
                if let Some(point) = point {
                    self.inject_at(&point).await;
                }
            }
            Message::Garbage(who, line) => self
                .observed
                .problems
                .push(format!("`{who}` wrote a line that is no event: {line}")),
            Message::Closed(who) => {
                self.closed.insert(who);
            }
            Message::Archived(at) => self.observed.archived_at = Some(at),
        }
    }

    // ----- the end -----

    /// Wait (bounded) until every process is gone; continue hung ones once the others
    /// are done or the operation is archived; kill what is left.
    pub(super) async fn settle(&mut self) {
        let deadline = Instant::now() + self.timing().settle_bound;
        loop {
            let others_done = self
                .procs
                .values()
                .all(|p| p.hung || self.closed.contains(&p.name));
            if others_done || self.observed.archived_at.is_some() {
                for p in self.procs.values_mut().filter(|p| p.hung) {
                    p.resume();
                    self.observed
                        .notes
                        .push(format!("`{}` continued (SIGCONT) after its hang", p.name));
                }
            }
            if self.procs.keys().all(|p| self.closed.contains(p)) {
                break;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) => self.on_message(message).await,
                _ => break,
            }
        }
        let archive_bound = Duration::from_secs(5);
        for (name, proc) in self.procs.iter_mut() {
            let ended = if self.closed.contains(name) {
                match proc.reap(archive_bound).await {
                    Some(status) => Ended::from_status(status),
                    None => {
                        proc.kill().await;
                        Ended::Leftover
                    }
                }
            } else {
                proc.kill().await;
                Ended::Leftover
            };
            self.observed.ended.insert(name.clone(), ended);
        }
        // Messages that arrived meanwhile (the archive, last events).
        while let Ok(message) = self.rx.try_recv() {
            self.on_message(message).await;
        }
    }

    /// The final state, the temp files, the stderr tails.
    pub(super) async fn collect(&mut self) {
        if let (Some(reader), Some(op)) = (&self.reader, &self.operation) {
            let store = reader.store();
            let data = match store.read_archived(op).await {
                Ok(data) => Some(data),
                Err(_) => store.read(op).await.ok(),
            };
            if let Some(data) = data {
                let nanos = |t: Option<crate::clock::Timestamp>| {
                    t.and_then(|t| t.timestamp_nanos_opt())
                        .and_then(|n| u64::try_from(n).ok())
                };
                self.observed.state = Some(data.operation_state);
                self.observed.ledger_detected_at = nanos(data.detection_timestamp);
                self.observed.ledger_removed_at = nanos(data.removal_timestamp);
                self.observed.reason = data.failure.map(|f| f.reason);
            }
            reader.dispose().await;
        }
        for name in self.scenario.temp_names() {
            let exists = self.temp_path(&name).symlink_metadata().is_ok();
            self.observed.temps_exist.insert(name, exists);
        }
        for (name, proc) in &self.procs {
            let tail = proc.stderr_tail();
            if !tail.is_empty() {
                self.observed.stderr.insert(name.clone(), tail);
            }
        }
    }
}
