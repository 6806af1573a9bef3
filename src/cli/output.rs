//! What `run` tells the person or script that started it, in one of three modes: a live
//! progress display on a terminal, plain lines otherwise (both on stderr), or `--json`:
//! one JSON event per line on stdout and nothing else there.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::schedule::Status;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperationStarted {
    pub operation: String,
    pub ledger: String,
    pub participant: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerStarted {
    pub name: String,
    pub call: String,
    pub pid: i32,
    pub attempt: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerFinished {
    pub name: String,
    pub call: Option<String>,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    pub attempt: u32,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The JSON result of `stdio` and `file` workers (a string when the file is not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperationFinished {
    pub operation: String,
    /// `completed` or `failed`.
    pub state: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    /// Workers that never started.
    pub skipped: Vec<String>,
    /// Why the operation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An operation left by dead participants that was cleaned up: its recorded worker groups
/// stopped, its temp resources deleted, archived.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperationRecovered {
    pub operation: String,
    /// The state it was archived in: `failed`, unless it had ended before.
    pub state: String,
    pub dead_participants: Vec<String>,
    /// Worker process groups that were still running and were stopped.
    pub stopped_workers: usize,
    pub deleted_temp_resources: Vec<String>,
    /// Where the operation was archived.
    pub archive: String,
    /// What its record named that was not touched, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untouched: Vec<String>,
}

impl From<&tom_dist_ledger::ledger::Recovered> for OperationRecovered {
    fn from(r: &tom_dist_ledger::ledger::Recovered) -> Self {
        OperationRecovered {
            operation: r.operation_id.to_string(),
            state: "failed".to_string(),
            dead_participants: r.dead_participants.iter().map(|p| p.to_string()).collect(),
            stopped_workers: r.stopped_workers,
            deleted_temp_resources: r.deleted_temp_resources.clone(),
            archive: r.archive.clone(),
            untouched: r.untouched.clone(),
        }
    }
}

/// One line of `--json` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    OperationStarted(OperationStarted),
    OperationRecovered(OperationRecovered),
    WorkerStarted(WorkerStarted),
    WorkerFinished(WorkerFinished),
    OperationFinished(OperationFinished),
}

/// Colour (ANSI escapes) on stderr only when it is a terminal and `NO_COLOR` is unset or
/// empty (<https://no-color.org>): logs and pipes get plain text.
pub fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    colour_allowed(std::env::var_os("NO_COLOR").as_deref()) && std::io::stderr().is_terminal()
}

fn colour_allowed(no_color: Option<&std::ffi::OsStr>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

/// How events are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Progress,
    Plain,
    Json,
}

impl Mode {
    /// JSON when asked for; a progress display when stderr is a terminal; else plain.
    pub fn choose(json: bool) -> Mode {
        use std::io::IsTerminal;
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Progress
        } else {
            Mode::Plain
        }
    }
}

/// Lines longer than this (bytes) bypass the progress display's own printing.
const LONG_LINE: usize = 4096;

struct Counts {
    done: u64,
    failed: u64,
    running: Vec<String>,
}

/// The event sink of one `run`.
pub struct Output {
    mode: Mode,
    bar: Option<ProgressBar>,
    counts: Mutex<Counts>,
}

impl Output {
    pub fn new(mode: Mode, workers: usize) -> Output {
        let bar = (mode == Mode::Progress).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(workers as u64), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} done{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Output {
            mode,
            bar,
            counts: Mutex::new(Counts {
                done: 0,
                failed: 0,
                running: Vec::new(),
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Job control stops the run: the display stops ticking (it would draw over the
    /// shell) until [`resume`](Self::resume).
    pub fn pause(&self) {
        if let Some(bar) = &self.bar {
            bar.disable_steady_tick();
        }
    }

    /// The run continues after `paused`: the elapsed time shown leaves the pause out.
    pub fn resume(&self, paused: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_elapsed(bar.elapsed().saturating_sub(paused));
            bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    pub fn emit(&self, event: Event) {
        match self.mode {
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            Mode::Plain => eprint_line(&describe(&event)),
            Mode::Progress => self.progress(&event),
        }
    }

    /// A line a worker wrote, shown above the progress display. Long lines are written
    /// while the display is hidden, as they are (the display would measure them first).
    pub fn worker_line(&self, name: &str, line: &str) {
        let text = format!("[{name}] {line}");
        match &self.bar {
            Some(bar) if text.len() > LONG_LINE => bar.suspend(|| eprint_line(&text)),
            Some(bar) => bar.println(text),
            None => eprint_line(&text),
        }
    }

    fn progress(&self, event: &Event) {
        let Some(bar) = &self.bar else { return };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::WorkerStarted(w) => counts.running.push(w.name.clone()),
            Event::WorkerFinished(w) => {
                if let Some(i) = counts.running.iter().position(|n| n == &w.name) {
                    counts.running.remove(i);
                }
                counts.done += 1;
                if w.status != Status::Ok {
                    counts.failed += 1;
                }
                bar.println(describe(event));
            }
            Event::OperationStarted(_) | Event::OperationRecovered(_) => {
                bar.println(describe(event))
            }
            Event::OperationFinished(_) => {
                bar.finish_and_clear();
                eprint_line(&describe(event));
                return;
            }
        }
        bar.set_position(counts.done);
        let failed = if counts.failed > 0 {
            format!(", {} failed", counts.failed)
        } else {
            String::new()
        };
        let running = if counts.running.is_empty() {
            String::new()
        } else {
            format!(
                " | running {}: {}",
                counts.running.len(),
                counts.running.join(", ")
            )
        };
        bar.set_message(format!("{failed}{running}"));
    }
}

fn eprint_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// The plain-text line of an event.
pub fn describe(event: &Event) -> String {
    match event {
        Event::OperationStarted(e) => {
            format!("operation {} started (ledger {})", e.operation, e.ledger)
        }
        Event::OperationRecovered(r) => recovered_line(r),
        Event::WorkerStarted(w) => {
            let attempt = if w.attempt > 1 {
                format!(", attempt {}", w.attempt)
            } else {
                String::new()
            };
            format!("started  {} (pid {}{attempt})", w.name, w.pid)
        }
        Event::WorkerFinished(w) => {
            let mut line = format!(
                "{:<8} {} in {}",
                w.status.as_str(),
                w.name,
                seconds(w.duration_ms)
            );
            if let Some(e) = &w.error {
                line.push_str(&format!(": {e}"));
            }
            line
        }
        Event::OperationFinished(e) => {
            let mut line = format!(
                "operation {} {} in {}",
                e.operation,
                e.state,
                seconds(e.duration_ms)
            );
            if let Some(r) = &e.reason {
                line.push_str(&format!(": {r}"));
            }
            if !e.skipped.is_empty() {
                line.push_str(&format!(" (not started: {})", e.skipped.join(", ")));
            }
            line
        }
    }
}

/// `recovered operation X (dead: run-1): stopped 2 worker groups, deleted 1 temp resource,
/// archived as failed to PATH`.
pub fn recovered_line(r: &OperationRecovered) -> String {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let dead = if r.dead_participants.is_empty() {
        "none registered".to_string()
    } else {
        r.dead_participants.join(", ")
    };
    format!(
        "recovered operation {} (dead: {dead}): stopped {}, deleted {}, archived as {} to {}",
        r.operation,
        plural(r.stopped_workers, "worker group"),
        plural(r.deleted_temp_resources.len(), "temp resource"),
        r.state,
        r.archive
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_set_to_anything_but_empty_turns_colour_off() {
        use std::ffi::OsStr;
        assert!(colour_allowed(None));
        assert!(colour_allowed(Some(OsStr::new(""))));
        assert!(!colour_allowed(Some(OsStr::new("1"))));
        assert!(!colour_allowed(Some(OsStr::new("false"))));
    }

    #[test]
    fn events_serialise_with_their_name() {
        let e = Event::WorkerFinished(WorkerFinished {
            name: "build".into(),
            call: Some("call_run-1_1_abcd".into()),
            status: Status::Timeout,
            exit_code: None,
            signal: Some(15),
            duration_ms: 1500,
            attempt: 1,
            error: None,
            result: None,
        });
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "worker_finished");
        assert_eq!(v["status"], "timeout");
        assert_eq!(v["signal"], 15);
        assert!(v["exit_code"].is_null());
        assert!(v.get("error").is_none());
        assert_eq!(describe(&e), "timeout  build in 1.50s");
        let s = Event::OperationStarted(OperationStarted {
            operation: "op".into(),
            ledger: "/l".into(),
            participant: "run-1".into(),
        });
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"event":"operation_started","operation":"op","ledger":"/l","participant":"run-1"}"#
        );
    }
}
