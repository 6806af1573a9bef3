//! Helpers for tests that need a process of their own or wait for the kernel.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long to wait for something that should happen within milliseconds: generous,
/// because CI runs on two loaded cores.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Environment variable that tells an `#[ignore]`d test it runs as the child of
/// [`run_alone_in_child`]; such tests return at once without it.
pub const CHILD_ENV: &str = "TOM_LEDGER_TEST_CHILD_DIR";

/// Run the ignored test `name` of this test binary alone in a child process, for tests
/// that change process-wide state (the umask) or count the threads of the process. The
/// child gets `dir` in [`CHILD_ENV`].
pub fn run_alone_in_child(name: &str, dir: &Path) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir)
        .output()
        .expect("run test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test `{name}` failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Check `done` until it holds, pausing briefly between checks; panic after [`PATIENCE`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// True when some process is blocked in `flock` on the file with inode `ino`
/// (`/proc/locks` lists waiters with `->`).
pub fn has_lock_waiter(ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|line| {
        line.contains("->")
            && line.contains("FLOCK")
            && line.split_whitespace().any(|field| {
                field.rsplit(':').next() == Some(&ino.to_string()) && field.contains(':')
            })
    })
}

pub mod crash;
pub mod peer;
pub mod process;
pub mod server;
