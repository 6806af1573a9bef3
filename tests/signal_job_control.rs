//! The library's opt-in job control (`CleanupHandler::install_job_control`): SIGTSTP stops
//! a supervisor and every process of its workers' groups and records the pause in the
//! ledger; SIGCONT resumes them all and clears it; Ctrl+C still cleans up afterwards.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{TestScope, marked_pids, state, wait_until_async};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tom_dist_ledger::OperationId;
use tom_dist_ledger::ids::ParticipantId;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, Store};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_worker-supervisor");
const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const BOUND: Duration = Duration::from_secs(30);

#[tokio::test]
async fn sigtstp_stops_the_supervisor_and_its_worker_groups_and_sigcont_resumes_them() {
    let scope = TestScope::new();
    let ledger = tempfile::tempdir().unwrap();
    let temps = tempfile::tempdir().unwrap();
    let mut child = Command::new(SUPERVISOR)
        .args(["--ledger", ledger.path().to_str().unwrap()])
        .args(["--fork-tree", FORK_TREE])
        .args(["--temp-dir", temps.path().to_str().unwrap()])
        .args(["--workers", "2", "--tree", "1", "--grace-ms", "3000"])
        .args(["--job-control", "--marker", &scope.marker])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(BOUND, lines.next_line())
        .await
        .expect("supervisor ready in time")
        .unwrap()
        .expect("supervisor printed ready");
    let op = OperationId::parse(line.strip_prefix("ready ").expect("ready line")).unwrap();
    let pid = child.id().unwrap() as i32;
    // The supervisor, 2 workers and a grandchild each.
    let all = marked_pids(&scope.marker);
    assert_eq!(all.len(), 5);
    let store = FileStore::open(ledger.path(), FileStoreOptions::default()).unwrap();
    let me = ParticipantId::parse("supervisor").unwrap();
    let paused_at = || async { store.read(&op).await.unwrap().participants[&me].paused_at };

    kill(Pid::from_raw(pid), Signal::SIGTSTP).unwrap();
    wait_until_async("every process to be stopped", BOUND, || {
        all.iter().all(|&p| state(p) == Some('T'))
    })
    .await;
    assert!(paused_at().await.is_some(), "the pause is not recorded");

    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    wait_until_async("every process to run again", BOUND, || {
        all.iter().all(|&p| state(p).is_some_and(|s| s != 'T'))
    })
    .await;
    common::crash::wait_for("the resume to be recorded", || async {
        paused_at().await.is_none()
    })
    .await;

    kill(Pid::from_raw(pid), Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .expect("exit in time")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    scope.assert_clean();
    assert_eq!(std::fs::read_dir(temps.path()).unwrap().count(), 0);
}
