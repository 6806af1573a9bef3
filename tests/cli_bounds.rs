//! The ledger stays bounded under many nested `tom-ledger exec` calls, and a participant
//! stopped while it holds an operation's lock freezes nobody: with the real binary, real
//! processes and real signals.

mod cli_common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_common::{Env, Live, only_operation, wait_bounded, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const LOCK_HOLDER: &str = env!("CARGO_BIN_EXE_worker-lock-holder");

fn size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn trail_sizes(dir: &Path) -> Vec<u64> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| size(&e.path())).collect())
        .unwrap_or_default()
}

#[test]
fn many_sequential_execs_keep_the_ledger_bounded() {
    let env = Env::new();
    let execs = 150;
    let trail_max = 24 * 1024;
    let log_max = 8 * 1024;
    let script = format!(
        "i=0; while [ $i -lt {execs} ]; do tom-ledger exec -- true || exit 1; i=$((i+1)); done"
    );
    let mut cmd = env.cmd(&["--json", "run", "--", "sh", "-c", &script, &env.marker]);
    cmd.env("TOM_LEDGER_TRAIL_MAX_BYTES", trail_max.to_string())
        .env("TOM_LEDGER_LOG_MAX_BYTES", log_max.to_string());
    let started = Instant::now();
    cli_common::run(cmd).expect_code(0);
    eprintln!("{execs} execs in {:?}", started.elapsed());

    let op = only_operation(&env);
    let archive = env.ledger.join("backup").join(&op);
    let data: Value =
        serde_json::from_slice(&fs::read(archive.join("operation.json")).unwrap()).unwrap();
    let registered = data["participants"].as_object().unwrap();
    assert!(
        registered.len() <= 2,
        "participants that left stay registered: {registered:?}"
    );
    assert_eq!(data["participantsLeft"], execs, "every exec left in order");
    assert!(data["recentlyLeft"].as_array().unwrap().len() <= 8);

    // Every version of the file stayed small, however many execs came before it: the
    // trail holds the last ones, and the final file is one more.
    let file = size(&archive.join("operation.json"));
    let sizes = trail_sizes(&archive.join("trail"));
    assert!(!sizes.is_empty());
    let largest = sizes.iter().copied().max().unwrap().max(file);
    assert!(
        largest < 8 * 1024,
        "a version of {largest} bytes: the file grows with the execs"
    );
    let trail_bytes: u64 = sizes.iter().sum();
    eprintln!(
        "largest version {largest} bytes, trail {trail_bytes} bytes in {} entries",
        sizes.len()
    );
    assert!(
        trail_bytes <= trail_max,
        "trail of {trail_bytes} bytes over its bound {trail_max}"
    );

    // The log rotated: both generations are bounded and archived, and it reads whole.
    let log = archive.join("operation.log");
    let rotated = archive.join("operation.log.1");
    assert!(rotated.is_file(), "the log was never rotated");
    for generation in [&log, &rotated] {
        assert!(
            size(generation) <= log_max + 1024,
            "{} holds {} bytes",
            generation.display(),
            size(generation)
        );
    }
    let out = env.run(&["log", &op]);
    out.expect_code(0);
    assert!(out.stdout.contains("LOG_ROTATED offset="), "{}", out.stdout);
    assert!(out.stdout.contains("OPERATION_COMPLETED"), "{}", out.stdout);
    env.assert_no_leftovers();
}

#[test]
fn a_bad_bound_is_a_usage_error_that_changes_nothing() {
    let env = Env::new();
    for (var, value, says) in [
        ("TOM_LEDGER_TRAIL_MAX_BYTES", "lots", "`lots` is not a size"),
        (
            "TOM_LEDGER_LOG_MAX_BYTES",
            "99999999999999999G",
            "too large",
        ),
        ("TOM_LEDGER_LOCK_TIMEOUT", "0", "too small (at least 1ms)"),
        ("TOM_LEDGER_LOCK_TIMEOUT", "soon", "invalid duration `soon`"),
        ("TOM_LEDGER_TRAIL_KEEP", "-1", "`-1` is not a count"),
    ] {
        let mut cmd = env.cmd(&["run", "--", "true"]);
        cmd.env(var, value);
        let out = cli_common::run(cmd);
        out.expect_code(2);
        assert!(
            out.stderr.contains(var) && out.stderr.contains(says),
            "{var}={value}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(!env.ledger.exists(), "{var}={value} created the ledger");
    }
}

/// Starts the lock holder on `lock` and returns it once it holds the lock.
fn hold_lock(env: &Env, lock: &Path) -> std::process::Child {
    let mut holder = std::process::Command::new(LOCK_HOLDER)
        .arg(lock)
        .args(["--marker", &env.marker])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the lock holder");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).expect("holder output");
    assert_eq!(line.trim(), "locked");
    holder
}

#[test]
fn a_stopped_lock_holder_bounds_every_writer_and_signals_still_work() {
    let env = Env::new();
    // The worker reports that it runs, waits for the test, then tries a nested exec
    // (one write under the lock) and records how that went.
    let script = "touch $D/started; while [ ! -e $D/go ]; do sleep 0.05; done; \
        tom-ledger exec -- true 2> $D/exec.err; echo $? > $D/exec.code.tmp; \
        mv $D/exec.code.tmp $D/exec.code; exec worker-hang --marker $0 > /dev/null";
    let mut cmd = env.cmd(&["--json", "run", "--", "sh", "-c", script, &env.marker]);
    cmd.env("TOM_LEDGER_LOCK_TIMEOUT", "2s");
    let mut run = Live::start(cmd);
    wait_until("the worker to start", || env.path("started").exists());
    let op = only_operation(&env);
    let lock = env.ledger.join(format!("{op}.operation.json.lock"));
    let mut holder = hold_lock(&env, &lock);
    let holder_pid = nix::unistd::Pid::from_raw(holder.id() as i32);
    nix::sys::signal::kill(holder_pid, Signal::SIGSTOP).unwrap();

    // Another participant's write fails after the bound, naming the holder.
    fs::write(env.path("go"), b"").unwrap();
    wait_until("the nested exec to give up", || {
        env.path("exec.code").exists()
    });
    let code = fs::read_to_string(env.path("exec.code")).unwrap();
    let err = fs::read_to_string(env.path("exec.err")).unwrap();
    assert_ne!(
        code.trim(),
        "0",
        "the exec succeeded under a held lock: {err}"
    );
    assert!(
        err.contains("timed out after 2s waiting for the lock")
            && err.contains(&format!("held by pid {}", holder.id())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // The supervisor still handles SIGINT while its own writes wait on the lock.
    let asked = Instant::now();
    run.signal(Signal::SIGINT);
    let status = wait_bounded(&mut run.child, Duration::from_secs(45));
    let took = asked.elapsed();
    let out = run.finish();
    eprintln!("run stderr:\n{}", out.stderr);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        None,
        "{status:?}"
    );
    assert_eq!(status.code(), Some(130), "after {took:?}");
    eprintln!("exited 130 after {took:?} with the lock held by a stopped process");

    nix::sys::signal::kill(holder_pid, Signal::SIGKILL).unwrap();
    nix::sys::signal::kill(holder_pid, Signal::SIGCONT).unwrap();
    holder.wait().unwrap();
    env.assert_no_leftovers();
}
