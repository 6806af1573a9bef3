//! The runner: one scenario, start to end. It starts each participant as its own
//! process when its first call comes up, walks the call tree depth first (telling each
//! participant to open, answer and end its calls, and waiting for it to say it did),
//! injects each fault when the run reaches its point, and after the last step or a fault
//! waits for the end: every process gone (a hung one is continued once the others are
//! done with it), the operation archived. Whatever is still running then is killed and
//! reported. It never sleeps to wait for something; only `--pace` keeps calls open longer.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::future::BoxFuture;
use crate::ids::OperationId;
use crate::ledger::Ledger;
use crate::process::Signal;

use super::backend::{Backend, Prepared};
use super::observed::{Ended, Injected, Observed};
use super::processes::{Message, Proc};
use super::protocol::{AwaitResponse, Command, Event, StartCall, now_nanos};
use super::scenario::{CallSpec, FaultKind, Point, Scenario};
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
}

impl RunnerOptions {
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        RunnerOptions {
            exe: exe.into(),
            backend: Backend::File,
            timing: Timing::fast(),
            scratch_root: std::env::temp_dir(),
        }
    }
}

/// Why the walk stopped before its end.
enum Stop {
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
    let prepared = options.backend.prepare(scratch)?;
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

struct Run<'a> {
    scenario: &'a Scenario,
    options: &'a RunnerOptions,
    scratch: PathBuf,
    prepared: Prepared,
    procs: BTreeMap<String, Proc>,
    tx: mpsc::UnboundedSender<Message>,
    rx: mpsc::UnboundedReceiver<Message>,
    observed: Observed,
    operation: Option<OperationId>,
    reader: Option<Ledger>,
    /// Indexes of the scenario's faults already injected.
    injected: BTreeSet<usize>,
    /// Participants whose stdout closed.
    closed: BTreeSet<String>,
    /// Participants told to leave or complete: their end is expected.
    dismissed: BTreeSet<String>,
}

impl<'a> Run<'a> {
    fn timing(&self) -> &Timing {
        &self.options.timing
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.scratch.join("temps").join(name)
    }

    fn response_file(&self, call: &str) -> PathBuf {
        self.scratch.join(format!("{call}.response.json"))
    }

    // ----- the walk -----

    async fn walk(&mut self) -> std::result::Result<(), Stop> {
        let scenario = self.scenario;
        for call in &scenario.calls {
            self.walk_call(call, None).await?;
        }
        let initiator = scenario.initiator().unwrap_or_default().to_string();
        let others: Vec<String> = self
            .observed
            .started
            .iter()
            .rev()
            .filter(|p| **p != initiator)
            .cloned()
            .collect();
        for p in others {
            let since = self.observed.events.len();
            self.dismissed.insert(p.clone());
            self.send(&p, Command::Leave).await?;
            self.wait_for(since, &p, "its exit", |e| matches!(e, Event::Exit { .. }))
                .await?;
        }
        let since = self.observed.events.len();
        self.dismissed.insert(initiator.clone());
        self.send(&initiator, Command::Complete).await?;
        self.wait_for(since, &initiator, "its exit", |e| {
            matches!(e, Event::Exit { .. })
        })
        .await?;
        Ok(())
    }

    fn walk_call<'b>(
        &'b mut self,
        call: &'a CallSpec,
        parent: Option<String>,
    ) -> BoxFuture<'b, std::result::Result<(), Stop>> {
        Box::pin(async move {
            let since = self.events_len();
            self.open(call, parent).await?;
            let id = self.wait_started(since, &call.by, &call.name).await?;
            if call.nested.is_empty() {
                // The deepest point of this branch: which calls are open at once.
                self.snapshot_open_calls().await;
            }
            self.pace().await;
            self.body(call, id).await?;
            let since = self.events_len();
            self.send(
                &call.by,
                Command::End {
                    call: call.name.clone(),
                },
            )
            .await?;
            self.wait_ended(since, &call.by, &call.name).await
        })
    }

    /// The inside of an open call: its external answer, then its nested calls (one by
    /// one, or all open at once when parallel).
    fn body<'b>(
        &'b mut self,
        call: &'a CallSpec,
        id: String,
    ) -> BoxFuture<'b, std::result::Result<(), Stop>> {
        Box::pin(async move {
            if let Some(external) = &call.external {
                let responder = external.responder.clone();
                let since = self.events_len();
                let start = StartCall {
                    call: external.call.clone(),
                    parent: Some(id.clone()),
                    temps: Vec::new(),
                    fail_on_crash: false,
                    callees: Vec::new(),
                    hold_cleanup: self.holds_cleanup(&external.call),
                    respond_file: Some(self.response_file(&call.name)),
                    await_response: None,
                };
                self.send(&responder, Command::Start(start)).await?;
                self.wait_started(since, &responder, &external.call).await?;
                self.pace().await;
                let since = self.events_len();
                self.send(
                    &responder,
                    Command::End {
                        call: external.call.clone(),
                    },
                )
                .await?;
                self.wait_ended(since, &responder, &external.call).await?;
                let name = call.name.clone();
                self.wait_for(
                    since,
                    &call.by,
                    "the answer",
                    move |e| matches!(e, Event::Answered { call, .. } if *call == name),
                )
                .await?;
            }
            if call.parallel && call.nested.len() > 1 {
                let since = self.events_len();
                for n in &call.nested {
                    self.open(n, Some(id.clone())).await?;
                }
                let mut ids = Vec::new();
                for n in &call.nested {
                    ids.push(self.wait_started(since, &n.by, &n.name).await?);
                }
                self.snapshot_open_calls().await;
                self.pace().await;
                for (n, nid) in call.nested.iter().zip(ids) {
                    self.body(n, nid).await?;
                }
                let since = self.events_len();
                for n in &call.nested {
                    self.send(
                        &n.by,
                        Command::End {
                            call: n.name.clone(),
                        },
                    )
                    .await?;
                }
                for n in &call.nested {
                    self.wait_ended(since, &n.by, &n.name).await?;
                }
            } else {
                for n in &call.nested {
                    self.walk_call(n, Some(id.clone())).await?;
                }
            }
            Ok(())
        })
    }

    /// Tell the call's participant (started first if needed) to open it.
    async fn open(
        &mut self,
        call: &'a CallSpec,
        parent: Option<String>,
    ) -> std::result::Result<(), Stop> {
        self.ensure_started(&call.by).await?;
        if let Some(external) = &call.external {
            // Ready before the caller starts waiting for it.
            self.ensure_started(&external.responder).await?;
        }
        let mut callees: Vec<String> = Vec::new();
        for n in &call.nested {
            if n.by != call.by && !callees.contains(&n.by) {
                callees.push(n.by.clone());
            }
        }
        let start = StartCall {
            call: call.name.clone(),
            parent,
            temps: call.temps.iter().map(|t| self.temp_path(t)).collect(),
            fail_on_crash: call.fail_on_crash,
            callees,
            hold_cleanup: self.holds_cleanup(&call.name),
            respond_file: None,
            await_response: call.external.as_ref().map(|_| AwaitResponse {
                file: self.response_file(&call.name),
                deadline_ms: self.timing().response_deadline.as_millis() as u64,
            }),
        };
        self.send(&call.by, Command::Start(start)).await
    }

    fn holds_cleanup(&self, call: &str) -> bool {
        self.scenario
            .faults
            .iter()
            .any(|f| f.at == Point::Cleanup(call.to_string()))
    }

    async fn wait_started(
        &mut self,
        since: usize,
        who: &str,
        call: &str,
    ) -> std::result::Result<String, Stop> {
        let name = call.to_string();
        let index = self
            .wait_for(
                since,
                who,
                &format!("`{call}` to start"),
                move |e| matches!(e, Event::Started { call, .. } if *call == name),
            )
            .await?;
        match &self.observed.events[index].1 {
            Event::Started { call_id, .. } => Ok(call_id.clone()),
            _ => Err(Stop::Unexpected(format!("no call id for `{call}`"))),
        }
    }

    async fn wait_ended(
        &mut self,
        since: usize,
        who: &str,
        call: &str,
    ) -> std::result::Result<(), Stop> {
        let name = call.to_string();
        self.wait_for(
            since,
            who,
            &format!("`{call}` to end"),
            move |e| matches!(e, Event::Ended { call, .. } if *call == name),
        )
        .await
        .map(|_| ())
    }

    async fn pace(&self) {
        let pace = self.timing().pace;
        if !pace.is_zero() {
            // Only for a run one can follow: calls stay open this much longer.
            tokio::time::sleep(pace).await;
        }
    }

    /// Read the ledger while parallel calls are all open: which calls are open at once.
    async fn snapshot_open_calls(&mut self) {
        let (Some(reader), Some(op)) = (&self.reader, &self.operation) else {
            return;
        };
        if let Ok(data) = reader.read_live(op).await {
            let open = data
                .call_frames
                .iter()
                .filter_map(|f| f.description.clone())
                .collect();
            self.observed.open_together.push(open);
        }
    }

    /// Start participant `name` unless it runs already, and wait until it is in.
    async fn ensure_started(&mut self, name: &str) -> std::result::Result<(), Stop> {
        if self.procs.contains_key(name) {
            return Ok(());
        }
        if !self.injected.is_empty() {
            return Err(Stop::Faulted);
        }
        let initiator = self.scenario.initiator() == Some(name);
        let mut args: Vec<OsString> = self.prepared.participant_args();
        args.extend(["--participant".into(), name.into()]);
        args.push("simulate-participant".into());
        let t = self.timing();
        for (flag, value) in [
            ("--heartbeat-ms", t.heartbeat),
            ("--stale-ms", t.stale),
            ("--cleanup-wait-ms", t.cleanup_wait),
        ] {
            args.push(flag.into());
            args.push(value.as_millis().to_string().into());
        }
        if !initiator {
            let Some(op) = &self.operation else {
                return Err(Stop::Unexpected(format!(
                    "`{name}` cannot join: no operation was created"
                )));
            };
            args.extend(["--operation".into(), op.to_string().into()]);
        }
        let since = self.events_len();
        let proc = Proc::spawn(name, &self.options.exe, args, self.tx.clone())
            .map_err(|e| Stop::Unexpected(format!("cannot start `{name}`: {e}")))?;
        self.procs.insert(name.to_string(), proc);
        self.observed.started.push(name.to_string());
        let index = self
            .wait_for(since, name, "it to join", |e| {
                matches!(e, Event::Ready { .. })
            })
            .await?;
        if initiator && let Event::Ready { operation, .. } = &self.observed.events[index].1 {
            let op = OperationId::parse(operation.as_str())
                .map_err(|e| Stop::Unexpected(format!("initiator reported {e}")))?;
            self.watch_archive(&op).await;
            self.operation = Some(op);
        }
        Ok(())
    }

    /// Note when the operation leaves the live ledger.
    async fn watch_archive(&mut self, op: &OperationId) {
        let Ok(reader) = Ledger::connect(self.prepared.reader()).await else {
            return;
        };
        let (watcher, op, tx) = (reader.clone(), op.clone(), self.tx.clone());
        let bound = self.timing().step_bound * 20 + self.timing().settle_bound;
        tokio::spawn(async move {
            if watcher.wait_archived(&op, bound).await {
                let _ = tx.send(Message::Archived(now_nanos()));
            }
        });
        self.reader = Some(reader);
    }

    /// Send a command, unless a fault was injected: the run goes its own way from there.
    async fn send(&mut self, who: &str, command: Command) -> std::result::Result<(), Stop> {
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

    fn events_len(&self) -> usize {
        self.observed.events.len()
    }

    /// Wait until `who` reports an event matching `pick` (at or after index `since`);
    /// returns its index. Stops at a fault, at anything that ends a participant's part,
    /// and after the step bound.
    async fn wait_for(
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

    async fn on_message(&mut self, message: Message) {
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

    // ----- faults -----

    async fn inject_at(&mut self, point: &Point) {
        let faults: Vec<(usize, crate::simulate::scenario::Fault)> = self
            .scenario
            .faults
            .iter()
            .enumerate()
            .filter(|(i, f)| &f.at == point && !self.injected.contains(i))
            .map(|(i, f)| (i, f.clone()))
            .collect();
        for (i, fault) in faults {
            self.injected.insert(i);
            // Taken before the signal goes: whatever it causes happens after this.
            let at = now_nanos();
            let delivered = self.inject(&fault.participant, &fault.kind, point).await;
            self.observed.faults.push(Injected {
                participant: fault.participant.clone(),
                kind: fault.kind.clone(),
                point: point.to_string(),
                at,
                delivered,
            });
        }
    }

    /// Do it: a real signal, or a command that fails the call, or nothing (a timeout:
    /// the participant is simply never told to answer).
    async fn inject(&mut self, who: &str, kind: &FaultKind, point: &Point) -> bool {
        let Some(proc) = self.procs.get_mut(who) else {
            self.observed.problems.push(format!(
                "fault for `{who}` at {point}: it was never started"
            ));
            return false;
        };
        match kind {
            FaultKind::Crash => proc.signal(Signal::SIGKILL),
            FaultKind::Abort => proc.signal(Signal::SIGINT),
            FaultKind::Hang => proc.hang().await,
            FaultKind::Timeout => true,
            FaultKind::Error(message) => {
                let call = match point {
                    Point::Started(c) | Point::Ended(c) | Point::Cleanup(c) => c.clone(),
                    Point::Joined(_) => return false,
                };
                proc.send(&Command::Fail {
                    call,
                    message: message.clone(),
                })
                .await
            }
        }
    }

    // ----- the end -----

    /// Wait (bounded) until every process is gone; continue hung ones once the others
    /// are done or the operation is archived; kill what is left.
    async fn settle(&mut self) {
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
    async fn collect(&mut self) {
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
