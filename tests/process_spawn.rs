//! Spawning: own process group, environment and directory, a clear error for a missing
//! program, and a parent-death signal that does not fire when the spawning thread ends.

mod common;

use std::time::Duration;

use common::process::{BOUND, TestScope, alive, stat_field, wait_until};
use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::Error;
use tom_dist_ledger::process::{ProcessIdentity, StdioMode, WorkerCommand, registry};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

#[tokio::test]
async fn missing_executable_is_a_clear_error() {
    let err = WorkerCommand::new("/nonexistent/tom-ledger-no-such-worker")
        .spawn()
        .expect_err("must fail");
    match &err {
        Error::Spawn { program, .. } => {
            assert_eq!(program, "/nonexistent/tom-ledger-no-such-worker")
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("cannot start `/nonexistent/tom-ledger-no-such-worker`"),
        "{msg}"
    );
    assert!(msg.contains("No such file"), "{msg}");
}

#[tokio::test]
async fn missing_executable_in_path_is_a_clear_error() {
    let err = WorkerCommand::new("tom-ledger-no-such-worker")
        .parent_death_signal(None)
        .spawn()
        .expect_err("must fail");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
}

#[tokio::test]
async fn worker_leads_its_own_group_and_gets_env_and_cwd() {
    let scope = TestScope::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut worker = WorkerCommand::new("/bin/sh")
        .args([
            "-c",
            "echo \"$TOM_LEDGER_OPERATION $(pwd)\"",
            "--marker",
            &scope.marker,
        ])
        .env("TOM_LEDGER_OPERATION", "op-1")
        .current_dir(dir.path())
        .stdout(StdioMode::Piped)
        .spawn()
        .expect("spawn");
    assert_eq!(worker.pgid(), worker.pid());
    assert_ne!(worker.pgid(), nix::unistd::getpgrp().as_raw());
    let mut out = BufReader::new(worker.take_stdout().expect("stdout")).lines();
    let line = out.next_line().await.expect("read").expect("line");
    let real = dir.path().canonicalize().expect("canonical");
    assert_eq!(line, format!("op-1 {}", real.display()));
    assert!(worker.wait().await.expect("wait").success());
}

#[tokio::test]
async fn identity_and_info_describe_the_worker() {
    let scope = TestScope::new();
    let mut worker = WorkerCommand::new(HANG)
        .args(["--marker", &scope.marker])
        .stdout(StdioMode::Null)
        .spawn()
        .expect("spawn");
    let pid = worker.pid();
    let ticks: u64 = stat_field(pid, 22).expect("stat").parse().expect("ticks");
    assert_eq!(
        worker.identity(),
        &ProcessIdentity::of(pid).expect("identity")
    );
    assert_eq!(worker.identity().start_ticks, ticks);
    assert!(worker.identity().is_same_process_alive());
    assert_eq!(
        worker.info().command,
        vec![HANG.to_owned(), "--marker".into(), scope.marker.clone()]
    );
    assert!(registry().pgids().contains(&worker.pgid()));
    worker.kill().await;
    assert!(!worker.identity().is_same_process_alive());
    assert!(!registry().pgids().contains(&worker.pgid()));
    scope.assert_clean();
}

/// Linux sends the parent-death signal when the forking *thread* ends; the worker must
/// survive the end of the thread that asked for the spawn.
#[test]
fn worker_survives_the_end_of_the_spawning_thread() {
    let scope = TestScope::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    let marker = scope.marker.clone();
    let worker = std::thread::spawn(move || {
        let _guard = handle.enter();
        WorkerCommand::new(HANG)
            .args(["--marker", &marker])
            .stdout(StdioMode::Null)
            .spawn()
            .expect("spawn")
    })
    .join()
    .expect("spawning thread");
    let pid = worker.pid();
    // A parent-death signal tied to the ended thread would arrive at once; give it a
    // generous moment to show up before concluding it did not.
    let until = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < until {
        assert!(alive(pid), "worker died with its spawning thread");
        std::thread::sleep(Duration::from_millis(10));
    }
    runtime.block_on(async move {
        let mut worker = worker;
        worker.kill().await;
    });
    wait_until("worker gone", BOUND, || !alive(pid));
    scope.assert_clean();
}

/// A worker's recorded start time is the one `/proc/PID/stat` gives, however it was
/// found (the spawn brackets it with the boot-time clock, or reads it); stopping each
/// worker through its record reaches nothing else (a process of the test's own, started
/// beside them, must survive).
#[tokio::test]
async fn the_recorded_start_time_is_the_one_proc_gives() {
    let scope = TestScope::new();
    let sentinel_scope = TestScope::new();
    let mut sentinel = std::process::Command::new(HANG)
        .args(["--marker", &sentinel_scope.marker])
        .spawn()
        .expect("sentinel");
    let sentinel_pid = sentinel.id() as i32;
    for _ in 0..40 {
        let mut worker = WorkerCommand::new(HANG)
            .args(["--marker", &scope.marker])
            .spawn()
            .expect("spawn");
        let recorded = worker.info().identity.clone();
        let read = ProcessIdentity::of(recorded.pid).expect("running worker");
        assert_eq!(
            recorded.start_ticks, read.start_ticks,
            "pid {}",
            recorded.pid
        );
        assert_eq!(recorded, read);
        worker.kill().await;
        assert!(alive(sentinel_pid), "the sentinel was hit");
    }
    scope.assert_clean();
    // Ours: spawned here and not reaped yet.
    sentinel.kill().expect("stop the sentinel");
    sentinel.wait().expect("reap the sentinel");
    sentinel_scope.assert_clean();
}
