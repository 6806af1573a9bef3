//! Workers with a parent-death signal or a cgroup are created with
//! `clone(CLONE_VM | CLONE_VFORK)` and waited for through a pidfd: failures before and at
//! `exec` come back as clear errors, nothing leaks into the worker or stays behind in the
//! supervisor (descriptors, zombies), the worker starts with default signal handling, and
//! the program is looked up in `PATH` as `execvp` does. The fork method stays available.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::PermissionsExt;

use common::process::{BOUND, TestScope, alive, state, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tom_dist_ledger::Error;
use tom_dist_ledger::process::{SpawnMethod, StdioMode, WorkerCommand};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

fn spawn_error(cmd: WorkerCommand) -> io::Error {
    match cmd.spawn() {
        Err(Error::Spawn { source, .. }) => source,
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(mut w) => {
            let pid = w.pid();
            drop(w.try_wait());
            panic!("spawn of pid {pid} should have failed")
        }
    }
}

fn open_fds() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// Runs `cmd` with stdout piped and returns what it printed, after a successful exit.
async fn output(cmd: WorkerCommand) -> String {
    let mut worker = cmd.stdout(StdioMode::Piped).spawn().expect("spawn");
    let mut out = String::new();
    worker
        .take_stdout()
        .expect("stdout")
        .read_to_string(&mut out)
        .await
        .expect("read stdout");
    let status = worker.wait().await.expect("wait");
    assert!(status.success(), "{status:?}: {out}");
    out
}

#[tokio::test]
async fn exec_failures_come_back_with_their_errno() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let e = spawn_error(WorkerCommand::new(&missing));
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");

    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write");
    let e = spawn_error(WorkerCommand::new(&plain));
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");

    let e = spawn_error(WorkerCommand::new(dir.path()));
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");

    let e = spawn_error(WorkerCommand::new("tom-ledger-no-such-worker"));
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
}

#[tokio::test]
async fn a_missing_working_directory_names_the_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = spawn_error(WorkerCommand::new("/bin/true").current_dir(dir.path().join("gone")));
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("working directory"), "{e}");
}

#[tokio::test]
async fn the_program_is_looked_up_in_the_workers_path_as_execvp_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&first).expect("mkdir");
    std::fs::create_dir(&second).expect("mkdir");
    // Not executable in the first directory: skipped, as execvp skips it.
    std::fs::write(first.join("tdl-probe"), "#!/bin/sh\necho first\n").expect("write");
    let script = second.join("tdl-probe");
    std::fs::write(&script, "#!/bin/sh\necho \"second $0 $1\"\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("{}:{}:/bin:/usr/bin", first.display(), second.display());
    let out = output(WorkerCommand::new("tdl-probe").arg("x").env("PATH", &path)).await;
    assert_eq!(out, format!("second {} x\n", script.display()));
    // Only an unusable candidate: EACCES, as execvp reports it.
    let e = spawn_error(WorkerCommand::new("tdl-probe").env("PATH", first.as_os_str()));
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
}

#[tokio::test]
async fn argv0_environment_and_streams_reach_the_worker() {
    let out = output(
        WorkerCommand::new("/bin/sh")
            .arg0("tdl-name")
            .args(["-c", "echo \"$0 $TDL_ONE $TDL_TWO\"; echo err >&2"])
            .env("TDL_ONE", "first")
            .env("TDL_TWO", "dropped")
            .env("TDL_TWO", "second")
            .stderr(StdioMode::Null),
    )
    .await;
    assert_eq!(out, "tdl-name first second\n");

    let mut worker = WorkerCommand::new("/bin/sh")
        .args(["-c", "read line; echo \"got $line\"; echo oops >&2"])
        .stdin(StdioMode::Piped)
        .stdout(StdioMode::Piped)
        .stderr(StdioMode::Piped)
        .spawn()
        .expect("spawn");
    let mut stdin = worker.take_stdin().expect("stdin");
    stdin.write_all(b"hello\n").await.expect("write");
    drop(stdin);
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = worker.take_stdout().expect("stdout");
    let mut stderr = worker.take_stderr().expect("stderr");
    stdout.read_to_string(&mut out).await.expect("read");
    stderr.read_to_string(&mut err).await.expect("read");
    assert!(worker.wait().await.expect("wait").success());
    assert_eq!((out.as_str(), err.as_str()), ("got hello\n", "oops\n"));
}

#[tokio::test]
async fn the_worker_inherits_only_its_standard_streams() {
    // What this process got without close-on-exec from whoever started it (a jobserver,
    // say) every child inherits; anything else but 0, 1 and 2 would be a leak.
    let inherited: BTreeSet<String> = open_fds()
        .into_iter()
        .filter(|fd| {
            let fd: i32 = fd.parse().expect("fd");
            // SAFETY: F_GETFD only reads the descriptor's flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .chain(["0", "1", "2"].map(String::from))
        .collect();
    for method in [SpawnMethod::Vfork, SpawnMethod::Fork] {
        let out = output(
            WorkerCommand::new("ls")
                .arg("/proc/self/fd")
                .stdin(StdioMode::Piped)
                .stderr(StdioMode::Piped)
                .spawn_method(method),
        )
        .await;
        // `ls` itself holds one descriptor: the directory it lists.
        let extra: Vec<&str> = out.lines().filter(|fd| !inherited.contains(*fd)).collect();
        assert_eq!(
            extra.len(),
            1,
            "{method:?}: {out:?}, inherited {inherited:?}"
        );
    }
}

#[test]
fn a_dropped_running_worker_is_killed_and_reaped() {
    let scope = TestScope::new();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pid = runtime.block_on(async {
        let worker = WorkerCommand::new(HANG)
            .args(["--marker", &scope.marker])
            .stdout(StdioMode::Null)
            .spawn()
            .expect("spawn");
        let pid = worker.pid();
        assert!(alive(pid));
        drop(worker);
        pid
    });
    // Gone entirely, not a zombie: reaped although nobody waited for it.
    wait_until("dropped worker reaped", BOUND, || state(pid).is_none());
    scope.assert_clean();
}

#[tokio::test]
async fn the_worker_starts_with_default_signal_handling() {
    // Rust ignores SIGPIPE in the supervisor; Tokio catches SIGCHLD once it waits for a
    // child. Neither may reach the worker, and no signal may stay blocked. The worker is
    // `cat` waiting on its stdin: unlike a Rust program, it changes no signal handling.
    let _sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .expect("SIGCHLD handler");
    for method in [SpawnMethod::Vfork, SpawnMethod::Fork] {
        let mut worker = WorkerCommand::new("cat")
            .stdin(StdioMode::Piped)
            .stdout(StdioMode::Null)
            .spawn_method(method)
            .spawn()
            .expect("spawn");
        let pid = worker.pid();
        let mask = |name: &str| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with(name))?;
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        };
        let bit = |sig: i32| 1u64 << (sig - 1);
        assert_eq!(mask("SigBlk:"), Some(0), "{method:?}: blocked signals");
        let ignored = mask("SigIgn:").expect("SigIgn");
        assert_eq!(
            ignored & bit(libc::SIGPIPE),
            0,
            "{method:?}: SIGPIPE ignored"
        );
        assert_eq!(
            ignored & bit(libc::SIGCHLD),
            0,
            "{method:?}: SIGCHLD ignored"
        );
        assert_eq!(mask("SigCgt:"), Some(0), "{method:?}: caught signals");
        drop(worker.take_stdin());
        assert!(worker.wait().await.expect("wait").success());
    }
}

/// The supervisor role of [`worker_dies_with_its_killed_supervisor_whichever_thread`]:
/// spawns one worker from a runtime worker thread (through the spawner thread) and one from
/// the thread that runs the test, prints their pids, hangs.
#[test]
fn supervisor_role() {
    let Ok(marker) = std::env::var("TDL_TEST_VFORK_SUPERVISOR") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let spawn = {
            let marker = marker.clone();
            move || {
                WorkerCommand::new(HANG)
                    .args(["--marker", &marker])
                    .stdout(StdioMode::Null)
                    .spawn()
                    .expect("spawn")
            }
        };
        let a = tokio::spawn({
            let spawn = spawn.clone();
            async move { spawn() }
        })
        .await
        .expect("task");
        let b = spawn();
        println!("\nworker-pids {} {}", a.pid(), b.pid());
        std::future::pending::<()>().await;
    });
}

#[test]
fn worker_dies_with_its_killed_supervisor_whichever_thread() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let scope = TestScope::new();
    let exe = std::env::current_exe().expect("test binary");
    let mut supervisor = std::process::Command::new(exe)
        .args(["--exact", "supervisor_role", "--nocapture"])
        .env("TDL_TEST_VFORK_SUPERVISOR", &scope.marker)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn supervisor");
    let stdout = supervisor.stdout.take().expect("stdout");
    let mut pids = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        if let Some((_, rest)) = line.split_once("worker-pids ") {
            pids = rest
                .split_whitespace()
                .map(|p| p.parse::<i32>().expect("pid"))
                .collect();
            break;
        }
    }
    if pids.is_empty() {
        let _ = supervisor.kill();
        let _ = supervisor.wait();
        panic!("the supervisor reported no workers");
    }
    assert!(pids.iter().all(|p| alive(*p)));
    supervisor.kill().expect("SIGKILL supervisor");
    supervisor.wait().expect("reap supervisor");
    wait_until("workers ended by the parent-death signal", BOUND, || {
        pids.iter().all(|p| !alive(*p))
    });
    scope.assert_clean();
}
