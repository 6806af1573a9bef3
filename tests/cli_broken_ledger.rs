//! The exit of `tom-ledger run` never waits on a ledger that cannot be written: after
//! Ctrl+C with the ledger directory deleted, a corrupt operation file or a read-only
//! ledger, the run stops its workers, deletes its temp resources and exits 130 after one
//! bounded attempt; and a second signal while the end is being recorded exits at once.

mod cli_common;

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_common::{Env, Live, Out, plan, wait_until, worker};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const PEER: &str = env!("CARGO_BIN_EXE_worker-ledger-peer");

/// Far below the 15 s the exit used to wait for an archive that could not come, and far
/// above the few hundred milliseconds it takes.
const PROMPT: Duration = Duration::from_secs(8);

/// A run with one worker that registered a temp resource and sleeps.
fn start(env: &Env, extra: &[&str]) -> (Live, String) {
    let p = plan(
        env,
        &[worker(
            env,
            "w",
            "touch $D/own.tmp $D/ready; exec sleep 60",
            "temp = [\"own.tmp\"]",
        )],
    );
    let mut args = vec!["--json", "run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--plan", &p]);
    let mut run = Live::start(env.cmd(&args));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let started: serde_json::Value = serde_json::from_str(&started).expect("JSON");
    let op = started["operation"].as_str().expect("op").to_string();
    run.wait_for_line("worker_started", |l| l.contains("worker_started"));
    wait_until("the worker to run", || env.path("ready").exists());
    assert!(env.path("own.tmp").exists());
    (run, op)
}

/// SIGINT, then the end: exit 130 within [`PROMPT`], no worker and no temp file left.
fn interrupt_and_check(env: &Env, run: Live) -> Out {
    let out = interrupt(env, run);
    out.expect_code(130);
    out
}

/// SIGINT, then the end within [`PROMPT`], no worker and no temp file left; any status.
fn interrupt(env: &Env, run: Live) -> Out {
    let interrupted = Instant::now();
    run.signal(Signal::SIGINT);
    let out = run.finish();
    assert!(
        interrupted.elapsed() < PROMPT,
        "the exit took {:?}; stderr:\n{}",
        interrupted.elapsed(),
        out.stderr
    );
    env.assert_no_leftovers();
    assert!(!env.path("own.tmp").exists(), "the temp resource is left");
    out
}

#[test]
fn a_deleted_ledger_directory_still_stops_the_workers_and_deletes_temp_resources() {
    let env = Env::new();
    let (run, _) = start(&env, &[]);
    delete_while_written(&env.ledger);
    let out = interrupt(&env, run);
    // Two events race: the SIGINT (exit 130) and the run noticing that its operation
    // file is gone, which fails the operation (exit 1). Either way it ends at once and
    // says so in its last event.
    assert!(
        [130, 1].contains(&out.code()),
        "unexpected exit status {}; stdout:\n{}\nstderr:\n{}",
        out.code(),
        out.stdout,
        out.stderr
    );
    assert_eq!(out.json().last().expect("events")["exit_code"], out.code());
}

/// Delete a directory that a running process goes on writing into: a file it creates
/// meanwhile makes one attempt fail with "not empty", so try again (bounded).
fn delete_while_written(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => return,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("deleting {} again after: {e}", dir.display());
            }
            Err(e) => panic!("delete {}: {e}", dir.display()),
        }
    }
}

#[test]
fn a_corrupt_operation_file_does_not_hold_up_the_exit() {
    let env = Env::new();
    let (run, op) = start(&env, &[]);
    let file = env.ledger.join(format!("{op}.operation.json"));
    std::fs::write(&file, b"{ \"operationId\": ").expect("corrupt the operation file");
    interrupt_and_check(&env, run);
}

/// A read-only bind mount of a directory over itself, undone when dropped.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> ReadOnly {
        let c = CString::new(dir.as_os_str().as_bytes()).expect("path");
        let none = std::ptr::null();
        // SAFETY: plain system calls with valid C strings.
        let rc = unsafe { libc::mount(c.as_ptr(), c.as_ptr(), none, libc::MS_BIND, none.cast()) };
        assert_eq!(rc, 0, "bind mount: {}", std::io::Error::last_os_error());
        let guard = ReadOnly(dir.to_path_buf());
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        // SAFETY: as above.
        let rc = unsafe { libc::mount(none, c.as_ptr(), none, flags, none.cast()) };
        assert_eq!(
            rc,
            0,
            "read-only remount: {}",
            std::io::Error::last_os_error()
        );
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: plain system call with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn a_read_only_ledger_does_not_hold_up_the_exit() {
    let env = Env::new();
    let (run, op) = start(&env, &[]);
    let read_only = ReadOnly::mount(&env.ledger);
    assert!(
        std::fs::write(env.ledger.join("probe"), b"").is_err(),
        "the ledger is still writable"
    );
    interrupt_and_check(&env, run);
    drop(read_only);
    // Left as it was: `tom-ledger recover` is the way to clean it up.
    assert!(env.ledger.join(format!("{op}.operation.json")).exists());
}

/// A peer process of the test, killed and reaped when the test ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_signal_while_the_end_is_recorded_exits_at_once() {
    let env = Env::new();
    // With a grace of a minute, the cleanup waits that long for a live participant.
    let (run, op) = start(&env, &["--grace", "60s"]);
    // A participant with an open call that paused (Ctrl+Z) and stays stopped: alive,
    // never judged stale, never cleaning up.
    let mut peer = Command::new(PEER);
    peer.args(["hang", "--ledger"])
        .arg(&env.ledger)
        .args(["--op", &op, "--participant", "holder", "--paused"])
        .args(["--marker", &env.marker])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut peer = Peer(peer.spawn().expect("start the peer"));
    let mut line = String::new();
    BufReader::new(peer.0.stdout.take().expect("peer stdout"))
        .read_line(&mut line)
        .expect("peer output");
    assert_eq!(line.trim(), "ready");
    kill(Pid::from_raw(peer.0.id() as i32), Signal::SIGSTOP).expect("stop the peer");

    run.signal(Signal::SIGINT);
    let log = env.ledger.join(format!("{op}.operation.log"));
    wait_until("the failure to be recorded", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("OPERATION_FAILED"))
    });
    let second = Instant::now();
    run.signal(Signal::SIGINT);
    let out = run.finish();
    out.expect_code(130);
    assert!(
        second.elapsed() < PROMPT,
        "the second signal waited {:?}",
        second.elapsed()
    );
    assert!(!env.path("own.tmp").exists(), "the temp resource is left");
    drop(peer);
    env.assert_no_leftovers();
}
