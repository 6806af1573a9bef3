//! A worker does not outlive its supervisor when the supervisor is SIGKILLed: the
//! parent-death signal ends it. The supervisor is this test binary run again in a
//! supervisor role (so no extra binary has to be built).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::process::{BOUND, TestScope, alive, wait_until};
use tom_dist_ledger::process::{StdioMode, WorkerCommand};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const ROLE: &str = "TDL_TEST_SUPERVISOR_MARKER";

/// In the supervisor role: spawns a worker through the library, prints its pid, hangs.
/// Run normally, it does nothing.
#[test]
fn supervisor_role() {
    let Ok(marker) = std::env::var(ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let worker = WorkerCommand::new(HANG)
            .args(["--marker", &marker])
            .stdout(StdioMode::Null)
            .spawn()
            .expect("spawn");
        println!("\nworker-pid {}", worker.pid());
        std::future::pending::<()>().await;
    });
}

#[test]
fn worker_dies_with_its_killed_supervisor() {
    let scope = TestScope::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut supervisor = Command::new(exe)
        .args([
            "--exact",
            "supervisor_role",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, &scope.marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn supervisor");
    let stdout = supervisor.stdout.take().expect("stdout");
    let _reaper = KillOnDrop(supervisor.id() as i32);
    let mut worker = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        // libtest may print its own text before ours on the same line.
        if let Some((_, pid)) = line.split_once("worker-pid ") {
            worker = Some(pid.trim().parse::<i32>().expect("pid"));
            break;
        }
    }
    let worker = worker.expect("supervisor reported its worker");
    assert!(alive(worker));
    supervisor.kill().expect("SIGKILL supervisor");
    supervisor.wait().expect("reap supervisor");
    wait_until("worker ended by the parent-death signal", BOUND, || {
        !alive(worker)
    });
    scope.assert_clean();
}

/// Kills the supervisor if the test fails before it does.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the supervisor we started; harmless if it is already gone.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}
