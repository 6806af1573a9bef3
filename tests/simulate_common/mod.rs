//! Running simulator scenarios from tests: through the library's runner, with the real
//! `tom-ledger` as the participant executable, in a scratch root of the test's own, under
//! a watchdog. Every run is checked to leave no process and no file behind.

#![allow(dead_code)]

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use tom_dist_ledger::simulate::protocol::Event;
use tom_dist_ledger::simulate::{self, Outcome, RunnerOptions, Scenario, Timing, builtin};

pub const BIN: &str = env!("CARGO_BIN_EXE_tom-ledger");

/// Aborts the test binary (its participant processes die with it: they have a
/// parent-death signal) if a run takes longer than this.
const WATCHDOG: Duration = Duration::from_secs(150);

struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn new(what: String) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
                eprintln!("watchdog: {what} still running after {WATCHDOG:?}");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Run `scenario` with `timing`; asserts that nothing is left behind (scratch files,
/// participant processes).
pub fn run_with(scenario: &Scenario, timing: Timing) -> Outcome {
    let _watchdog = Watchdog::new(format!("scenario {}", scenario.name));
    let root = tempfile::tempdir().expect("scratch root");
    let mut options = RunnerOptions::new(BIN);
    options.scratch_root = root.path().to_path_buf();
    options.timing = timing;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = runtime
        .block_on(simulate::run(scenario, &options))
        .expect("scenario runs");
    assert_nothing_left(root.path(), &outcome);
    outcome
}

pub fn run(scenario: &Scenario) -> Outcome {
    run_with(scenario, Timing::fast())
}

/// The built-in scenario `name` runs and passes its checks.
pub fn assert_passes(name: &str) -> Outcome {
    let scenario = builtin::find(name).expect("a built-in scenario");
    let outcome = run(&scenario);
    assert!(
        outcome.passed(),
        "{}",
        simulate::report::table(std::slice::from_ref(&outcome))
    );
    outcome
}

/// No scratch file, no participant process.
pub fn assert_nothing_left(root: &Path, outcome: &Outcome) {
    let left: Vec<_> = std::fs::read_dir(root)
        .expect("read scratch root")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    for (who, event) in &outcome.observed.events {
        if let Event::Ready { pid, .. } = event {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "participant `{who}` (pid {pid}) is still there"
            );
        }
    }
}
