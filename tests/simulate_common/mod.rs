//! Running simulator scenarios from tests: through the library's runner, with the real
//! `tom-ledger` as the participant executable, in a scratch root of the test's own, under
//! a watchdog. Every run is checked to leave no process and no file behind.

#![allow(dead_code)]

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use tom_dist_ledger::simulate::protocol::Event;
use tom_dist_ledger::simulate::{self, Backend, Outcome, RunnerOptions, Scenario, Timing, builtin};

pub const BIN: &str = env!("CARGO_BIN_EXE_tom-ledger");

/// Aborts the test binary (its participant processes die with it: they have a
/// parent-death signal) if a run takes longer than this.
const WATCHDOG: Duration = Duration::from_secs(150);

/// Held while a scenario or a group of scenarios runs.
static GROUPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The same for a group of scenarios run at once.
const GROUP_WATCHDOG: Duration = Duration::from_secs(300);

struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn new(what: String) -> Watchdog {
        Watchdog::with_bound(what, WATCHDOG)
    }

    fn with_bound(what: String, bound: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(bound) {
                eprintln!("watchdog: {what} still running after {bound:?}");
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
    let _one_at_a_time = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
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

/// Run the built-in scenarios `names` at once (they are independent: each has its own
/// scratch directory, operation and, on the server backend, server) on `backend`;
/// `etcd`: the cluster of the etcd backend (`None`: each scenario starts its own member).
/// Asserts that every one passes and that nothing is left behind: no scratch file, no
/// participant, no server or etcd member of theirs.
pub fn assert_all_pass_on(
    backend: Backend,
    etcd: Option<Vec<String>>,
    names: &[&str],
) -> Vec<Outcome> {
    // One group at a time in a test binary: several groups at once start dozens of
    // participant processes on two cores, enough to starve a participant past its
    // stale threshold (a false crash, as a real machine that loaded would see it too).
    let _one_at_a_time = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let _watchdog = Watchdog::with_bound(format!("scenarios {names:?}"), GROUP_WATCHDOG);
    let root = tempfile::tempdir().expect("scratch root");
    let mut options = RunnerOptions::new(BIN);
    options.scratch_root = root.path().to_path_buf();
    options.backend = backend;
    options.etcd_endpoints = etcd;
    let scenarios: Vec<Scenario> = names
        .iter()
        .map(|n| builtin::find(n).expect("a built-in scenario"))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcomes: Vec<Outcome> = runtime
        .block_on(futures_util::future::join_all(
            scenarios.iter().map(|s| simulate::run(s, &options)),
        ))
        .into_iter()
        .map(|o| o.expect("scenario runs"))
        .collect();
    drop(runtime);
    let report = simulate::report::table(&outcomes);
    for outcome in &outcomes {
        assert!(outcome.passed(), "on {}:\n{report}", backend.name());
        assert!(
            outcome.observed.ledger.starts_with(backend.name()),
            "`{}` ran on {}",
            outcome.name,
            outcome.observed.ledger
        );
        assert_nothing_left(root.path(), outcome);
    }
    let marker = root.path().to_str().expect("utf-8 path").to_string();
    let running = processes_with(&marker);
    assert!(
        running.is_empty(),
        "processes of the run still there: {running:?}"
    );
    outcomes
}

/// Pids of running (non-zombie) processes whose command line contains `marker` (a
/// scenario's scratch path: participants, servers and etcd members carry it).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// The outcome of scenario `name` among `outcomes`.
pub fn outcome_of<'a>(outcomes: &'a [Outcome], name: &str) -> &'a Outcome {
    outcomes
        .iter()
        .find(|o| o.name == name)
        .expect("the scenario ran")
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
