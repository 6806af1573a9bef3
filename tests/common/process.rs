//! Helpers for the process tests: a unique marker per test, finding and reaping the
//! processes that carry it, waiting for events with generous bounds, and a watchdog.
//!
//! Workers accept `--marker X`; forked children keep the parent's argv, so scanning
//! `/proc/*/cmdline` for the marker finds every process a test started.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for events that should take milliseconds (loaded CI can be slow).
pub const BOUND: Duration = Duration::from_secs(20);

/// A marker no other test (or test run) uses.
pub fn unique_marker() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "tdl-{}-{}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// State letter of `pid` (`Z` for a zombie), `None` if it does not exist.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Whether `pid` exists and has not exited (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// Live processes whose command line holds `marker` as one argument.
pub fn marked_pids(marker: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// SIGKILLs every live process carrying `marker`.
pub fn kill_marked(marker: &str) {
    for pid in marked_pids(marker) {
        // SAFETY: kill(2) on a pid we just found by its marker.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Polls `cond` until it holds; panics with `what` after `bound`.
pub fn wait_until(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        if start.elapsed() > bound {
            panic!("timed out after {bound:?} waiting until {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Waits (bounded) until no live process carries `marker`; kills and panics otherwise.
pub fn assert_none_left(marker: &str) {
    let start = Instant::now();
    loop {
        let left = marked_pids(marker);
        if left.is_empty() {
            return;
        }
        if start.elapsed() > BOUND {
            kill_marked(marker);
            panic!("processes left behind with marker {marker}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills the test's marked processes and aborts the test binary if the test runs longer
/// than its limit. Dropping it disarms it.
pub struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    pub fn new(marker: &str, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let marker = marker.to_owned();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: test with marker {marker} still running after {limit:?}");
                kill_marked(&marker);
                std::process::abort();
            }
        });
        Watchdog { disarm: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.disarm.take() {
            let _ = tx.send(());
        }
    }
}

/// Everything a test needs to clean up after itself: its marker and watchdog. On drop
/// (also when the test panics) it kills what is left with the marker.
pub struct TestScope {
    pub marker: String,
    _watchdog: Watchdog,
}

impl TestScope {
    pub fn new() -> TestScope {
        let marker = unique_marker();
        let watchdog = Watchdog::new(&marker, Duration::from_secs(90));
        TestScope {
            marker,
            _watchdog: watchdog,
        }
    }

    /// Asserts (with a bound) that nothing with the marker is running.
    pub fn assert_clean(&self) {
        assert_none_left(&self.marker);
    }
}

impl Drop for TestScope {
    fn drop(&mut self) {
        kill_marked(&self.marker);
    }
}

/// Reads lines from a worker's stdout until `ready`; returns the pids it printed as
/// `pid N` lines.
pub async fn read_until_ready(
    stdout: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Vec<i32> {
    let mut pids = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let line = tokio::time::timeout_at(deadline, stdout.next_line())
            .await
            .expect("worker did not print `ready` in time")
            .expect("read worker stdout")
            .expect("worker closed stdout before `ready`");
        if line == "ready" {
            return pids;
        }
        if let Some(pid) = line.strip_prefix("pid ") {
            pids.push(pid.trim().parse().expect("pid line"));
        }
    }
}

/// Async bounded wait for `cond`.
pub async fn wait_until_async(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        if start.elapsed() > bound {
            panic!("timed out after {bound:?} waiting until {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Whether this machine lets us create cgroup v2 directories with `cgroup.kill` (the
/// escape-proof mode's requirement); tests of that mode skip themselves otherwise.
pub fn cgroup_v2_writable() -> bool {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .any(|m| {
            let probe =
                std::path::Path::new(m).join(format!("tdl-test-probe-{}", std::process::id()));
            let ok = std::fs::create_dir(&probe).is_ok() && probe.join("cgroup.kill").exists();
            let _ = std::fs::remove_dir(&probe);
            ok
        })
}

/// Spawns `cmd` with stdout piped and waits until it prints `ready`; returns the worker
/// and the pids it printed (`pid N` lines) before that.
pub async fn spawn_ready(
    cmd: tom_dist_ledger::process::WorkerCommand,
) -> (tom_dist_ledger::process::Worker, Vec<i32>) {
    use tokio::io::AsyncBufReadExt;
    let mut worker = cmd
        .stdout(tom_dist_ledger::process::StdioMode::Piped)
        .spawn()
        .expect("spawn");
    let stdout = worker.take_stdout().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let pids = read_until_ready(&mut lines).await;
    (worker, pids)
}
