//! Ctrl+C-safe supervision: a supervisor process with three workers that fork
//! grandchildren and hold temp files, interrupted by real signals. The supervisor
//! installs the library's handler itself (`CleanupHandler::install`, or
//! `install_reporting`); without it the library leaves signals alone.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{TestScope, marked_pids};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tom_dist_ledger::OperationId;
use tom_dist_ledger::model::OperationState;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, Store};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_worker-supervisor");
const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");

struct Run {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    op: OperationId,
    ledger: tempfile::TempDir,
    temps: tempfile::TempDir,
}

async fn start(scope: &TestScope, ignore_term: bool, grace_ms: u64) -> Run {
    start_with(scope, ignore_term, grace_ms, "exit").await
}

/// A supervisor whose signal handler is installed in `signals` mode (`exit`, `report`,
/// or `none` for not at all).
async fn start_with(scope: &TestScope, ignore_term: bool, grace_ms: u64, signals: &str) -> Run {
    let ledger = tempfile::tempdir().unwrap();
    let temps = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(SUPERVISOR);
    cmd.args(["--ledger", ledger.path().to_str().unwrap()])
        .args(["--fork-tree", FORK_TREE])
        .args(["--temp-dir", temps.path().to_str().unwrap()])
        .args(["--workers", "3", "--tree", "2"])
        .args(["--grace-ms", &grace_ms.to_string()])
        .args(["--marker", &scope.marker])
        .args(["--signals", signals])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if ignore_term {
        cmd.arg("--ignore-term");
    }
    // The test may run with SIGINT ignored (a background job of a shell without job
    // control passes that on): start the supervisor with the default dispositions, as
    // from a terminal, so what it does with signals is its own doing.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("supervisor ready in time")
        .unwrap()
        .expect("supervisor printed ready");
    let op = OperationId::parse(line.strip_prefix("ready ").expect("ready line")).unwrap();
    // The supervisor, 3 workers and 2 grandchildren each, all alive.
    assert_eq!(marked_pids(&scope.marker).len(), 10);
    assert_eq!(std::fs::read_dir(temps.path()).unwrap().count(), 3);
    Run {
        child,
        lines,
        op,
        ledger,
        temps,
    }
}

async fn wait_exit(run: &mut Run) -> i32 {
    let status = tokio::time::timeout(Duration::from_secs(60), run.child.wait())
        .await
        .expect("supervisor exits")
        .unwrap();
    status.code().expect("exit code, not a signal death")
}

async fn assert_archived_failed(run: &Run, signal: &str) {
    let store = FileStore::open(run.ledger.path(), FileStoreOptions::default()).unwrap();
    let data = store.read_archived(&run.op).await.expect("archived");
    assert_eq!(data.operation_state, OperationState::Failed);
    assert!(data.aborted, "abort flag set for the others");
    let reason = data.failure.expect("failure recorded").reason;
    assert_eq!(reason, format!("interrupted by {signal}"));
    assert!(data.call_frames.is_empty());
    assert!(data.temp_resources.is_empty());
    let (log, _) = store
        .read_log(
            &run.op,
            tom_dist_ledger::store::LogKind::Main,
            tom_dist_ledger::store::LogCursor::START,
        )
        .await
        .unwrap();
    assert!(log.contains("CLEANUP_COMPLETED"), "{log}");
}

fn signal(run: &Run, sig: Signal) {
    kill(Pid::from_raw(run.child.id().unwrap() as i32), sig).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_everything_and_exits_130() {
    let scope = TestScope::new();
    let mut run = start(&scope, false, 5000).await;
    signal(&run, Signal::SIGINT);
    assert_eq!(wait_exit(&mut run).await, 130);
    scope.assert_clean();
    assert_eq!(
        std::fs::read_dir(run.temps.path()).unwrap().count(),
        0,
        "temp files deleted"
    );
    assert_archived_failed(&run, "SIGINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_143() {
    let scope = TestScope::new();
    let mut run = start(&scope, false, 5000).await;
    signal(&run, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut run).await, 143);
    scope.assert_clean();
    assert_eq!(std::fs::read_dir(run.temps.path()).unwrap().count(), 0);
    assert_archived_failed(&run, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ignoring_sigterm_are_killed_after_the_grace() {
    let scope = TestScope::new();
    let mut run = start(&scope, true, 1000).await;
    let sent = Instant::now();
    signal(&run, Signal::SIGINT);
    assert_eq!(wait_exit(&mut run).await, 130);
    assert!(
        sent.elapsed() >= Duration::from_millis(1000),
        "the grace was given"
    );
    scope.assert_clean();
    assert_eq!(std::fs::read_dir(run.temps.path()).unwrap().count(), 0);
    assert_archived_failed(&run, "SIGINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigint_ends_everything_at_once() {
    let scope = TestScope::new();
    // A grace far longer than the test's bound: only the second signal can end it.
    let mut run = start(&scope, true, 600_000).await;
    signal(&run, Signal::SIGINT);
    // Wait until the ladder has sent SIGTERM (the abort flag is set first).
    let store = FileStore::open(run.ledger.path(), FileStoreOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.read(&run.op).await.is_ok_and(|d| d.aborted) {
        assert!(Instant::now() < deadline, "abort flag never set");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = Instant::now();
    signal(&run, Signal::SIGINT);
    assert_eq!(wait_exit(&mut run).await, 130);
    assert!(sent.elapsed() < Duration::from_secs(30));
    scope.assert_clean();
    assert_eq!(
        std::fs::read_dir(run.temps.path()).unwrap().count(),
        0,
        "temp files deleted"
    );
}

/// Whether `pid` catches `sig` (its bit in `SigCgt` of `/proc/PID/status`).
fn catches(pid: u32, sig: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .expect("SigCgt line");
    mask & (1 << (sig as u32 - 1)) != 0
}

async fn next_line(run: &mut Run) -> String {
    tokio::time::timeout(Duration::from_secs(60), run.lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("a line before the end of stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_user_that_never_installs_the_handler_keeps_the_default_sigint() {
    let scope = TestScope::new();
    // Operation created, temp resources registered, workers running: all through the
    // library, and no handler installed.
    let mut run = start_with(&scope, false, 5000, "none").await;
    let pid = run.child.id().unwrap();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        assert!(!catches(pid, sig), "{sig} is caught without an install");
    }
    signal(&run, Signal::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(60), run.child.wait())
        .await
        .expect("supervisor ends")
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        (status.code(), status.signal()),
        (None, Some(Signal::SIGINT as i32)),
        "killed by SIGINT itself, not an exit with 130"
    );
    // Nothing was cleaned up on the library's initiative.
    assert_eq!(std::fs::read_dir(run.temps.path()).unwrap().count(), 3);
    let store = FileStore::open(run.ledger.path(), FileStoreOptions::default()).unwrap();
    let data = store.read(&run.op).await.expect("still live in the ledger");
    assert_eq!(data.operation_state, OperationState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporting_handler_leaves_the_signal_to_the_application() {
    let scope = TestScope::new();
    let mut run = start_with(&scope, false, 5000, "report").await;
    let pid = run.child.id().unwrap();
    assert!(catches(pid, Signal::SIGINT), "the handler listens");
    signal(&run, Signal::SIGINT);
    assert_eq!(next_line(&mut run).await, "reported SIGINT");
    // The application ran the handler's cleanup itself and chose its own exit status.
    assert_eq!(next_line(&mut run).await, "cleaned up");
    assert_eq!(wait_exit(&mut run).await, 0);
    scope.assert_clean();
    assert_eq!(std::fs::read_dir(run.temps.path()).unwrap().count(), 0);
    assert_archived_failed(&run, "SIGINT").await;
}

/// A process has one handler, installed one way: in a child test process (installing
/// changes the signal dispositions of the whole process).
#[test]
fn the_handler_is_installed_once_in_one_mode() {
    let dir = tempfile::tempdir().unwrap();
    common::run_alone_in_child("reporting_refuses_a_second_install", dir.path());
    common::run_alone_in_child("exiting_accepts_a_repeat_and_refuses_reporting", dir.path());
}

#[tokio::test]
#[ignore = "run by the_handler_is_installed_once_in_one_mode in a child process"]
async fn reporting_refuses_a_second_install() {
    if std::env::var_os(common::CHILD_ENV).is_none() {
        return;
    }
    let handler = tom_dist_ledger::CleanupHandler::global();
    let _stops = handler.install_reporting().expect("first install");
    let again = handler
        .install_reporting()
        .err()
        .expect("second install refused");
    assert!(again.to_string().contains("already installed"), "{again}");
    let exiting = handler.install().err().expect("exit mode refused");
    assert!(exiting.to_string().contains("report"), "{exiting}");
}

#[tokio::test]
#[ignore = "run by the_handler_is_installed_once_in_one_mode in a child process"]
async fn exiting_accepts_a_repeat_and_refuses_reporting() {
    if std::env::var_os(common::CHILD_ENV).is_none() {
        return;
    }
    let handler = tom_dist_ledger::CleanupHandler::global();
    handler.install().expect("first install");
    handler.install().expect("a repeat does nothing");
    let reporting = handler
        .install_reporting()
        .err()
        .expect("reporting refused");
    assert!(
        reporting.to_string().contains("already installed"),
        "{reporting}"
    );
}
