//! The signals `run` and `exec` handle, from before their operation exists to their exit,
//! through the library's one signal handler ([`CleanupHandler`]), installed to report:
//! SIGINT, SIGTERM and SIGHUP are reported to the command, which stops its workers and
//! records the end itself (each worker's end is reported, the exit is 128 + N); SIGTSTP
//! (Ctrl+Z) and SIGCONT (`fg`, `bg`) are the handler's job control.
//!
//! Workers live in process groups of their own, so the terminal's Ctrl+Z reaches only
//! this process. On SIGTSTP the handler has every operation of this process record the
//! pause in the ledger (peers then do not take its silence for a crash), stops every
//! worker group with SIGTSTP, and stops this process. Once continued it continues every
//! worker group and the operations record the resume, which is a heartbeat too.
//! Timeouts do not count the time stopped (the process layer's `job_control`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tom_dist_ledger::cleanup::{CleanupId, CleanupPhase, StopSignals};
use tom_dist_ledger::process::job_control;
use tom_dist_ledger::{CleanupHandler, Error};

use super::exit::{CliResult, Failure};

/// How long one ledger write of job control may take before the command goes on
/// without it (a ledger that cannot be written does not keep Ctrl+Z from working).
const LEDGER_TRY: Duration = Duration::from_secs(1);

/// The stop signals the command receives.
pub struct Signals {
    stops: StopSignals,
}

impl Signals {
    /// Install the library's handler to report stop signals, and its job control.
    pub fn install() -> CliResult<Signals> {
        let handler = CleanupHandler::global();
        handler.set_callback_timeout(LEDGER_TRY);
        let failed = |e: Error| Failure::failed(format!("cannot install signal handler: {e}"));
        let stops = handler.install_reporting().map_err(failed)?;
        handler.install_job_control().map_err(failed)?;
        Ok(Signals { stops })
    }

    /// Show job control on `display` for as long as the returned registration lives.
    pub fn show_pauses(&self, display: Arc<dyn Display>) -> PauseDisplay {
        let handler = CleanupHandler::global();
        // Time paused before this pause: the resume tells the display how long it lasted.
        let before = Arc::new(Mutex::new(Duration::ZERO));
        let paused_so_far = || job_control().paused_time().total_at(Instant::now());
        let (shown, since) = (display.clone(), before.clone());
        let pause = handler.register_phase(CleanupPhase::Pause, move |_| {
            *since.lock().unwrap_or_else(|e| e.into_inner()) = paused_so_far();
            shown.pause();
            Box::pin(async {})
        });
        let resume = handler.register_phase(CleanupPhase::Resume, move |_| {
            let before = *before.lock().unwrap_or_else(|e| e.into_inner());
            display.resume(paused_so_far().saturating_sub(before));
            Box::pin(async {})
        });
        PauseDisplay {
            ids: [pause, resume],
        }
    }

    /// The next SIGINT, SIGTERM or SIGHUP: its number.
    pub async fn next_stop(&mut self) -> i32 {
        match self.stops.recv().await {
            Some(sig) => sig as i32,
            // The runtime is shutting down: no signal comes any more.
            None => std::future::pending().await,
        }
    }
}

/// A display registered with the job control; unregistered when dropped.
pub struct PauseDisplay {
    ids: [CleanupId; 2],
}

impl Drop for PauseDisplay {
    fn drop(&mut self) {
        for id in self.ids {
            CleanupHandler::global().unregister(id);
        }
    }
}

/// What job control does to a progress display.
pub trait Display: Send + Sync {
    fn pause(&self) {}
    fn resume(&self, _paused: Duration) {}
}

impl Display for super::output::Output {
    fn pause(&self) {
        super::output::Output::pause(self)
    }

    fn resume(&self, paused: Duration) {
        super::output::Output::resume(self, paused)
    }
}
