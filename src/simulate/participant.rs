//! One participant of a scenario, in its own process: it creates or joins the operation
//! through the library, carries out the runner's commands (open, end and fail calls,
//! register temp files, answer or await an external call) and reports what it saw
//! (`failed()`, `aborted()`, a callee's crash, a deadline) as events on stdout.
//!
//! `tom-ledger` runs it as a hidden subcommand; the command installs the signal handler
//! for the initiator first (a user's Ctrl+C cleans up and exits with 130, as in `run`):
//! this module installs nothing and never exits the process itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::cleanup::{CleanupHandler, CleanupPhase};
use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId};
use crate::ledger::{
    Call, CallCallback, CallOptions, Connect, Ledger, Operation, OperationCallback,
    OperationOptions,
};
use crate::model::{OperationState, ParticipantState};
use crate::presence::HeartbeatErrorType;

use super::protocol::{Answer, AwaitResponse, Command, Event, StartCall, now_nanos};

/// Exit codes of a participant, as the original's: success, a failure or crash seen,
/// a deadline passed, an abort seen.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_TIMEOUT: i32 = 124;
pub const EXIT_ABORTED: i32 = 130;

/// How long a participant that saw the operation fail waits for the cleanup to end
/// (the operation archived) before it leaves anyway.
const ARCHIVE_WAIT: Duration = Duration::from_secs(30);

/// How long a participant whose heartbeat found the operation gone waits for the
/// library to say how it ended.
const GONE_WAIT: Duration = Duration::from_secs(10);

/// How often an awaited response file is looked at.
const RESPONSE_POLL: Duration = Duration::from_millis(10);

/// Who this participant is and where its operation is.
pub struct ParticipantConfig {
    /// The ledger, with this participant's id and timing already set.
    pub connect: Connect,
    /// The operation to join; `None`: create it (the initiator).
    pub join: Option<OperationId>,
}

/// Write one event as a JSON line on stdout (a closed stdout is no reason to fail).
pub fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// What the background parts of the participant tell its main loop.
enum Note {
    /// Participants the ledger records as crashed.
    Crashed(BTreeSet<String>),
    /// The operation is gone, or this participant was fenced out.
    Gone(String),
}

struct OpenCall {
    call: Arc<Call<()>>,
    callees: Vec<String>,
    respond_file: Option<PathBuf>,
}

/// Run the participant until the runner tells it to leave or complete, or until the
/// operation fails, is aborted or goes; returns the exit code.
pub async fn run_participant(config: ParticipantConfig) -> i32 {
    match Participant::start(config).await {
        Ok(mut p) => p.serve().await,
        Err(e) => {
            emit(&Event::Error {
                message: e.to_string(),
                at: now_nanos(),
            });
            emit(&Event::Exit {
                code: EXIT_FAILED,
                at: now_nanos(),
            });
            EXIT_FAILED
        }
    }
}

struct Participant {
    ledger: Ledger,
    op: Operation,
    notes: mpsc::UnboundedReceiver<Note>,
    calls: BTreeMap<String, OpenCall>,
    detected: BTreeSet<String>,
    saw_failed: bool,
    saw_aborted: bool,
    /// Set by an external call whose deadline passed (before it fails the call).
    timed_out: Arc<AtomicBool>,
}

impl Participant {
    async fn start(config: ParticipantConfig) -> Result<Participant> {
        let ledger = Ledger::connect(config.connect).await?;
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let (beat_tx, beat_rx) = tokio::sync::oneshot::channel();
        let beat_tx = Mutex::new(Some(beat_tx));
        let crashed_tx = notes_tx.clone();
        let gone_tx = notes_tx.clone();
        let callback = OperationCallback::new()
            .on_heartbeat_success(move |_, result| {
                if let Some(tx) = beat_tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(());
                }
                if let Some(data) = &result.data_after {
                    let crashed: BTreeSet<String> = data
                        .participants
                        .iter()
                        .filter(|(_, p)| p.state == ParticipantState::Crashed)
                        .map(|(id, _)| id.to_string())
                        .collect();
                    if !crashed.is_empty() {
                        let _ = crashed_tx.send(Note::Crashed(crashed));
                    }
                }
            })
            .on_heartbeat_error(move |_, error| {
                if matches!(
                    error.kind,
                    HeartbeatErrorType::LedgerNotFound | HeartbeatErrorType::Fenced
                ) {
                    let _ = gone_tx.send(Note::Gone(error.message.clone()));
                }
            });
        let options = OperationOptions::new()
            .description("simulated scenario")
            .callback(callback);
        let op = match &config.join {
            None => ledger.create_operation(options).await?,
            Some(id) => ledger.join_operation(id, options).await?,
        };
        // The first beat has landed before the runner may stop this process: nothing of
        // ours is half-written in the ledger then.
        tokio::time::timeout(Duration::from_secs(30), beat_rx)
            .await
            .map_err(|_| Error::Timeout {
                after: Duration::from_secs(30),
                what: "the first heartbeat".into(),
            })?
            .map_err(|_| Error::invalid("heartbeat", "stopped before its first beat"))?;
        // Reported when the application's signal handler starts its cleanup (only the
        // initiator's command installs one).
        CleanupHandler::global().register_phase(CleanupPhase::Early, |sig| {
            Box::pin(async move {
                emit(&Event::Interrupted {
                    signal: sig.to_string(),
                    at: now_nanos(),
                });
            })
        });
        emit(&Event::Ready {
            participant: op.participant_id().to_string(),
            operation: op.operation_id().to_string(),
            pid: op.pid(),
            at: now_nanos(),
        });
        Ok(Participant {
            ledger,
            op,
            notes,
            calls: BTreeMap::new(),
            detected: BTreeSet::new(),
            saw_failed: false,
            saw_aborted: false,
            timed_out: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The main loop: commands, and what the operation does meanwhile.
    async fn serve(&mut self) -> i32 {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let op = self.op.clone();
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) if line.trim().is_empty() => {}
                    Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                        Ok(Command::Leave) | Ok(Command::Complete) => {
                            return self.finish_in_order().await;
                        }
                        Ok(command) => self.command(command).await,
                        Err(e) => self.error(format!("bad command `{line}`: {e}")),
                    },
                    // The runner is gone: leave.
                    _ => return self.finish_after("the runner closed stdin").await,
                },
                info = op.failed(), if !self.saw_failed => {
                    self.saw_failed = true;
                    emit(&Event::Failed {
                        reason: info.reason.unwrap_or_default(),
                        at: now_nanos(),
                    });
                    self.see_abort();
                    return self.finish_after("failed").await;
                }
                _ = op.aborted(), if !self.saw_aborted => {
                    self.see_abort();
                    self.see_failure();
                    return self.finish_after("aborted").await;
                }
                Some(note) = self.notes.recv() => match note {
                    Note::Crashed(who) => self.callees_crashed(&who).await,
                    Note::Gone(why) => {
                        emit(&Event::Gone { why, at: now_nanos() });
                        self.learn_how_it_ended().await;
                        return self.finish_after("gone").await;
                    }
                },
            }
        }
    }

    /// The heartbeat found the operation gone. The library learns how it ended when
    /// its change watch sees the file go (`failed()` resolves then, for an operation
    /// archived as failed): wait for that, bounded, unless the archive says it completed.
    async fn learn_how_it_ended(&mut self) {
        let completed = matches!(
            self.ledger.read_operation(self.op.operation_id()).await,
            Ok((data, true)) if data.operation_state == OperationState::Completed
        );
        if !completed && !self.saw_failed {
            let _ = tokio::time::timeout(GONE_WAIT, self.op.failed()).await;
        }
        self.see_abort();
        self.see_failure();
    }

    fn see_abort(&mut self) {
        if !self.saw_aborted && self.op.is_aborted() {
            self.saw_aborted = true;
            emit(&Event::Aborted { at: now_nanos() });
        }
    }

    fn see_failure(&mut self) {
        if !self.saw_failed
            && let Some(info) = self.op.failure()
        {
            self.saw_failed = true;
            emit(&Event::Failed {
                reason: info.reason.unwrap_or_default(),
                at: now_nanos(),
            });
        }
    }

    fn error(&self, message: String) {
        emit(&Event::Error {
            message,
            at: now_nanos(),
        });
    }

    async fn command(&mut self, command: Command) {
        let result = match command {
            Command::Start(start) => self.start_call(start).await,
            Command::End { call } => self.end_call(&call).await,
            Command::Fail { call, message } => self.fail_call(&call, &message).await,
            Command::Leave | Command::Complete => Ok(()),
        };
        if let Err(e) = result {
            self.error(e.to_string());
        }
    }

    async fn start_call(&mut self, start: StartCall) -> Result<()> {
        for path in &start.temps {
            std::fs::write(path, b"simulated temp resource\n")
                .map_err(|e| Error::io("create", path, e))?;
            self.op.register_temp_resource(path).await?;
        }
        let mut options = CallOptions::<()>::new()
            .description(start.call.clone())
            .fail_on_crash(start.fail_on_crash);
        if let Some(parent) = &start.parent {
            options = options.parent(CallId::parse(parent.as_str())?);
        }
        if start.hold_cleanup {
            let name = start.call.clone();
            options = options.callback(CallCallback::new().on_cleanup(move || {
                let name = name.clone();
                async move {
                    emit(&Event::Cleanup {
                        call: name,
                        at: now_nanos(),
                    });
                    // Held here: the runner injects its fault now.
                    std::future::pending::<()>().await;
                }
            }));
        }
        let call = Arc::new(self.op.start_call(options).await?);
        emit(&Event::Started {
            call: start.call.clone(),
            call_id: call.call_id().to_string(),
            at: now_nanos(),
        });
        if let Some(wait) = &start.await_response {
            self.await_response(&start.call, call.clone(), wait.clone());
        }
        self.calls.insert(
            start.call.clone(),
            OpenCall {
                call,
                callees: start.callees,
                respond_file: start.respond_file,
            },
        );
        Ok(())
    }

    /// Wait for the answer in the background (the original's Copilot polling): answered,
    /// an error answer (the call fails with it), or the deadline (the call fails with a
    /// timeout). A failed or aborted operation ends the wait.
    fn await_response(&self, name: &str, call: Arc<Call<()>>, wait: AwaitResponse) {
        let name = name.to_string();
        let op = self.op.clone();
        let timed_out = self.timed_out.clone();
        tokio::spawn(async move {
            let deadline = Duration::from_millis(wait.deadline_ms);
            let answer = tokio::select! {
                a = tokio::time::timeout(deadline, read_answer(&wait.file)) => a,
                _ = op.failed() => return,
                _ = op.aborted() => return,
            };
            match answer {
                Ok(Ok(Answer::Answer(_))) => emit(&Event::Answered {
                    call: name,
                    at: now_nanos(),
                }),
                Ok(Ok(Answer::Error(message))) => {
                    let message = format!("external call answered with an error: {message}");
                    report_failed(&name, &call, &message).await;
                }
                Ok(Err(e)) => report_failed(&name, &call, &e.to_string()).await,
                Err(_) => {
                    timed_out.store(true, Ordering::SeqCst);
                    emit(&Event::TimedOut {
                        call: name.clone(),
                        at: now_nanos(),
                    });
                    let e = Error::Timeout {
                        after: deadline,
                        what: format!("the answer to `{name}`"),
                    };
                    report_failed(&name, &call, &e.to_string()).await;
                }
            }
        });
    }

    async fn end_call(&mut self, name: &str) -> Result<()> {
        let open = self.take(name)?;
        if let Some(file) = &open.respond_file {
            write_answer(file, &Answer::Answer(format!("answer of `{name}`")))?;
        }
        open.call.end(()).await?;
        emit(&Event::Ended {
            call: name.to_string(),
            at: now_nanos(),
        });
        Ok(())
    }

    async fn fail_call(&mut self, name: &str, message: &str) -> Result<()> {
        let open = self.take(name)?;
        if let Some(file) = &open.respond_file {
            write_answer(file, &Answer::Error(message.to_string()))?;
        }
        report_failed(name, &open.call, message).await;
        Ok(())
    }

    fn take(&mut self, name: &str) -> Result<OpenCall> {
        self.calls
            .remove(name)
            .ok_or_else(|| Error::invalid("call", format!("`{name}` is not open here")))
    }

    /// A callee of an open call was declared crashed: the caller sees it and fails the
    /// call (while the operation still runs; a failing operation cleans up on its own).
    async fn callees_crashed(&mut self, crashed: &BTreeSet<String>) {
        if self.op.failure().is_some() {
            return;
        }
        let hit: Vec<(String, String)> = self
            .calls
            .iter()
            .flat_map(|(name, open)| {
                open.callees
                    .iter()
                    .filter(|c| crashed.contains(*c))
                    .map(move |c| (name.clone(), c.clone()))
            })
            .collect();
        for (name, callee) in hit {
            if !self.detected.insert(callee.clone()) {
                continue;
            }
            emit(&Event::Detected {
                call: name.clone(),
                participant: callee.clone(),
                at: now_nanos(),
            });
            if let Some(open) = self.calls.remove(&name) {
                let message = format!("participant `{callee}` crashed");
                report_failed(&name, &open.call, &message).await;
            }
        }
    }

    /// The runner's `leave` or `complete`: the initiator completes, the others leave.
    async fn finish_in_order(&mut self) -> i32 {
        let result = if self.op.is_initiator() {
            self.op.complete().await
        } else {
            self.op.leave(false).await
        };
        let code = match result {
            Ok(()) => EXIT_OK,
            Err(e) => {
                self.error(e.to_string());
                EXIT_FAILED
            }
        };
        self.ledger.dispose().await;
        self.exit(code)
    }

    /// After a failure, an abort or the operation's end: stay until the cleanup is done
    /// (the operation archived), then leave; the exit code says what was seen.
    async fn finish_after(&mut self, _why: &str) -> i32 {
        if self.saw_failed || self.saw_aborted {
            self.ledger
                .wait_archived(self.op.operation_id(), ARCHIVE_WAIT)
                .await;
        }
        let _ = self.op.leave(true).await;
        self.ledger.dispose().await;
        let code = if self.timed_out.load(Ordering::SeqCst) {
            EXIT_TIMEOUT
        } else if self.saw_aborted {
            EXIT_ABORTED
        } else {
            EXIT_FAILED
        };
        self.exit(code)
    }

    fn exit(&self, code: i32) -> i32 {
        emit(&Event::Exit {
            code,
            at: now_nanos(),
        });
        code
    }
}

async fn report_failed(name: &str, call: &Call<()>, message: &str) {
    let result = call.fail(message).await;
    emit(&Event::CallFailed {
        call: name.to_string(),
        message: match result {
            Ok(()) => message.to_string(),
            Err(e) => format!("{message} ({e})"),
        },
        at: now_nanos(),
    });
}

/// Read the answer once the response file is complete (written to `.tmp`, renamed).
async fn read_answer(file: &Path) -> Result<Answer> {
    loop {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                return serde_json::from_str(&text).map_err(|e| {
                    Error::invalid(format!("answer in `{}`", file.display()), e.to_string())
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", file, e)),
        }
        tokio::time::sleep(RESPONSE_POLL).await;
    }
}

/// Write an answer: `.tmp` first, then renamed, so the reader never sees half of it.
fn write_answer(file: &Path, answer: &Answer) -> Result<()> {
    let tmp = file.with_extension("tmp");
    let text =
        serde_json::to_string(answer).map_err(|e| Error::invalid("answer", e.to_string()))?;
    std::fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| Error::io("rename", &tmp, e))
}
