//! The walk of a scenario's call tree, depth first: each participant is started when its
//! first call comes up, told to open, answer and end its calls, and waited for until it
//! says it did. Any fault, or anything unexpected, ends the walk; the runner then waits
//! for the outcome.

use std::ffi::OsString;

use crate::future::BoxFuture;
use crate::ids::OperationId;
use crate::ledger::Ledger;

use super::processes::{Message, Proc};
use super::protocol::{AwaitResponse, Command, Event, StartCall, now_nanos};
use super::runner::{Run, Stop};
use super::scenario::{CallSpec, Point};

impl<'a> Run<'a> {
    pub(super) async fn walk(&mut self) -> std::result::Result<(), Stop> {
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

    pub(super) fn walk_call<'b>(
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
    pub(super) fn body<'b>(
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
    pub(super) async fn open(
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

    pub(super) fn holds_cleanup(&self, call: &str) -> bool {
        self.scenario
            .faults
            .iter()
            .any(|f| f.at == Point::Cleanup(call.to_string()))
    }

    pub(super) async fn wait_started(
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

    pub(super) async fn wait_ended(
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

    pub(super) async fn pace(&self) {
        let pace = self.timing().pace;
        if !pace.is_zero() {
            // Only for a run one can follow: calls stay open this much longer.
            tokio::time::sleep(pace).await;
        }
    }

    /// Read the ledger while parallel calls are all open: which calls are open at once.
    pub(super) async fn snapshot_open_calls(&mut self) {
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
    pub(super) async fn ensure_started(&mut self, name: &str) -> std::result::Result<(), Stop> {
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
        if let Some(prefix) = self.prepared.etcd_prefix() {
            args.extend(["--etcd-prefix".into(), prefix.into()]);
        }
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
    pub(super) async fn watch_archive(&mut self, op: &OperationId) {
        let reader = match self.prepared.reader() {
            Ok(target) => Ledger::connect(target).await,
            Err(e) => Err(e),
        };
        let reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                self.observed
                    .problems
                    .push(format!("the runner cannot read the ledger: {e}"));
                return;
            }
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
}
