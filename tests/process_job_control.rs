//! Job control in the process layer: `stop_workers` stops every worker group with
//! SIGTSTP and `continue_workers` continues it; a runner's timeout does not count the
//! time in between.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{TestScope, state, wait_until_async};
use tom_dist_ledger::process::{RunOptions, WorkerCommand, job_control, run_stdio};

const TICKER: &str = env!("CARGO_BIN_EXE_worker-ticker");
const BOUND: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_stopped_worker_outlives_its_timeout_and_succeeds_once_continued() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let stop = dir.path().join("stop");
    let pid = Arc::new(Mutex::new(None));
    let seen = pid.clone();
    let timeout = Duration::from_secs(2);
    let cmd = WorkerCommand::new(TICKER)
        .arg(stop.to_str().expect("utf-8"))
        .args(["--every-ms", "20", "--marker", &scope.marker]);
    let opts = RunOptions::default()
        .timeout(timeout)
        .on_spawn(move |info| *seen.lock().unwrap() = Some(info.pid));
    let run = tokio::spawn(run_stdio(cmd, opts));
    wait_until_async("the worker to start", BOUND, || {
        pid.lock().unwrap().is_some()
    })
    .await;
    let pid = pid.lock().unwrap().expect("pid");

    assert_eq!(job_control().stop_workers(), 1, "one worker group");
    assert!(job_control().is_paused());
    wait_until_async("the worker to be stopped", BOUND, || {
        state(pid) == Some('T')
    })
    .await;
    // Stopped for longer than its whole timeout.
    tokio::time::sleep(timeout + Duration::from_secs(1)).await;
    assert_eq!(state(pid), Some('T'), "the worker ran on");
    assert!(
        !run.is_finished(),
        "the runner gave up while the worker was stopped"
    );
    let paused = job_control().continue_workers().expect("was paused");
    assert!(paused > timeout);
    wait_until_async("the worker to run again", BOUND, || state(pid) != Some('T')).await;
    std::fs::write(&stop, b"").expect("stop file");
    let out = tokio::time::timeout(BOUND, run)
        .await
        .expect("the runner ends")
        .expect("runner task")
        .expect("the worker succeeds: time stopped does not count");
    let text = String::from_utf8_lossy(&out.data);
    assert!(text.ends_with("done\n"), "{text}");
    scope.assert_clean();
}
