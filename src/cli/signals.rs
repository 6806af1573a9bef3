//! The signals `run` and `exec` handle themselves, from before their operation exists to
//! their exit: SIGINT, SIGTERM and SIGHUP stop the run; SIGTSTP (Ctrl+Z) and SIGCONT
//! (`fg`, `bg`) are job control.
//!
//! Workers live in process groups of their own, so the terminal's Ctrl+Z reaches only
//! this process. On SIGTSTP it records the pause in the ledger (peers then do not take
//! its silence for a crash), stops every worker group with SIGTSTP, and stops itself.
//! Once continued it continues every worker group and records the resume, which is a
//! heartbeat too. Timeouts do not count the time stopped (the process layer's
//! `job_control`).

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tom_dist_ledger::Ledger;
use tom_dist_ledger::process::job_control;

use super::exit::{CliResult, Failure};

/// How long one ledger write of job control may take before the command goes on
/// without it (a ledger that cannot be written does not keep Ctrl+Z from working).
const LEDGER_TRY: Duration = Duration::from_secs(1);

/// A signal the command acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// SIGINT, SIGTERM or SIGHUP: its number.
    Stop(i32),
    /// SIGTSTP.
    Pause,
    /// SIGCONT.
    Continue,
}

/// The command's signal streams.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    tstp: tokio::signal::unix::Signal,
    cont: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> CliResult<Signals> {
        let make = |kind: SignalKind| {
            signal(kind).map_err(|e| Failure::failed(format!("cannot install signal handler: {e}")))
        };
        Ok(Signals {
            int: make(SignalKind::interrupt())?,
            term: make(SignalKind::terminate())?,
            hup: make(SignalKind::hangup())?,
            tstp: make(SignalKind::from_raw(libc::SIGTSTP))?,
            cont: make(SignalKind::from_raw(libc::SIGCONT))?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Received {
        tokio::select! {
            Some(()) = self.int.recv() => Received::Stop(libc::SIGINT),
            Some(()) = self.term.recv() => Received::Stop(libc::SIGTERM),
            Some(()) = self.hup.recv() => Received::Stop(libc::SIGHUP),
            Some(()) = self.tstp.recv() => Received::Pause,
            Some(()) = self.cont.recv() => Received::Continue,
        }
    }

    /// The next SIGINT, SIGTERM or SIGHUP, handling job control on the way. Each pause
    /// or resume runs as a task of its own, so that it is carried through even when the
    /// caller stops waiting for this (another event won a `select!`).
    pub async fn next_stop(&mut self, ledger: &Ledger, display: &Arc<dyn Display>) -> i32 {
        loop {
            let (ledger, display) = (ledger.clone(), display.clone());
            let task = match self.recv().await {
                Received::Stop(n) => return n,
                Received::Pause => tokio::spawn(async move { pause(&ledger, &*display).await }),
                Received::Continue => tokio::spawn(async move { resume(&ledger, &*display).await }),
            };
            let _ = task.await;
        }
    }
}

/// What job control does to a progress display.
pub trait Display: Send + Sync {
    fn pause(&self) {}
    fn resume(&self, _paused: Duration) {}
}

/// No display (`exec`).
pub struct NoDisplay;

impl Display for NoDisplay {}

impl Display for super::output::Output {
    fn pause(&self) {
        super::output::Output::pause(self)
    }

    fn resume(&self, paused: Duration) {
        super::output::Output::resume(self, paused)
    }
}

/// Ctrl+Z: record the pause, stop every worker group, then this process; once it runs
/// again (SIGCONT), continue the workers and record the resume.
pub async fn pause(ledger: &Ledger, display: &dyn Display) {
    if job_control().is_paused() {
        return;
    }
    // Recorded first, while the workers still run (one of them may hold the ledger lock).
    record(ledger, true).await;
    display.pause();
    job_control().stop_workers();
    job_control().stop_self();
    resume(ledger, display).await;
}

/// SIGCONT: continue every worker group; if this process had paused, the pause ends.
pub async fn resume(ledger: &Ledger, display: &dyn Display) {
    if let Some(paused) = job_control().continue_workers() {
        display.resume(paused);
        record(ledger, false).await;
    }
}

async fn record(ledger: &Ledger, paused: bool) {
    let what = if paused { "pause" } else { "resume" };
    match tokio::time::timeout(LEDGER_TRY, ledger.set_paused(paused)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "{what} not recorded in the ledger"),
        Err(_) => tracing::warn!("{what} not recorded in the ledger within {LEDGER_TRY:?}"),
    }
}
