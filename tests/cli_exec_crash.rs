//! `tom-ledger exec` run from outside a worker records a fail-on-crash call: when the
//! `exec` process is SIGKILLed, the run that initiated the operation fails (exit 1), with
//! its workers stopped and its temp resources deleted. `--no-fail-on-crash` contains the
//! crash to that call, and the run goes on. A command that fails by itself is reported to
//! whoever started `exec` (its exit status), and the run goes on.

mod cli_common;

use cli_common::{Env, Live, plan, wait_until, worker};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A run whose one worker holds the operation open (until `$D/release` exists) and whose
/// temp resource `held.tmp` exists; returns the run and its operation id.
fn start_holding_run(env: &Env) -> (Live, String) {
    let p = plan(
        env,
        &[worker(
            env,
            "holder",
            "touch $D/held.tmp $D/ready; while [ ! -e $D/release ]; do sleep 0.01; done",
            "temp = [\"held.tmp\"]",
        )],
    );
    let mut run = Live::start(env.cmd(&["--json", "run", "--plan", &p]));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let op = serde_json::from_str::<Value>(&started).expect("json")["operation"]
        .as_str()
        .expect("operation id")
        .to_string();
    wait_until("the holder to run", || env.path("ready").exists());
    (run, op)
}

/// Start `exec --operation OP [extra] -- worker-hang MARKER` and wait until its call frame,
/// with the hanging worker in it, is in the ledger. Returns the exec and its frame.
fn start_exec(env: &Env, op: &str, extra: &[&str]) -> (Live, Value) {
    let mut args = vec!["exec", "--operation", op];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "worker-hang", &env.marker]);
    let mut exec = Live::start(env.cmd(&args));
    exec.wait_for_line("the hanging worker's ready", |l| l == "ready");
    (exec, exec_frame(env, op))
}

/// Wait until the operation has the frame of an `exec` call with its worker recorded.
fn exec_frame(env: &Env, op: &str) -> Value {
    let mut frame = Value::Null;
    wait_until("the exec call's frame", || {
        let out = env.run(&["--json", "status", op]);
        let Some(status) = out.json().into_iter().next() else {
            return false;
        };
        let found = status["frames"].as_array().and_then(|frames| {
            frames
                .iter()
                .find(|f| {
                    f["participant"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("exec-"))
                        && !f["process"].is_null()
                })
                .cloned()
        });
        match found {
            Some(f) => {
                frame = f;
                true
            }
            None => false,
        }
    });
    frame
}

#[test]
fn a_killed_exec_fails_the_run_that_initiated_the_operation() {
    let env = Env::new();
    let (run, op) = start_holding_run(&env);
    let (exec, frame) = start_exec(&env, &op, &[]);
    assert_eq!(frame["fail_on_crash"], true, "{frame:#}");

    exec.signal(Signal::SIGKILL);
    exec.finish();
    // The run ends by itself: nobody writes the release file.
    let out = run.finish();
    out.expect_code(1);
    let end = out
        .events("operation_finished")
        .pop()
        .expect("operation_finished");
    assert_eq!(end["state"], "failed", "{end:#}");
    let reason = end["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exec-") && reason.contains("crashed"),
        "{reason}"
    );
    let holder = out
        .events("worker_finished")
        .pop()
        .expect("worker_finished");
    assert_eq!(holder["status"], "cancelled", "{holder:#}");
    assert!(
        !env.path("held.tmp").exists(),
        "the run's temp resource was not deleted"
    );
    env.assert_no_leftovers();
}

#[test]
fn with_no_fail_on_crash_a_killed_exec_fails_only_its_call() {
    let env = Env::new();
    let (run, op) = start_holding_run(&env);
    let (exec, frame) = start_exec(&env, &op, &["--no-fail-on-crash"]);
    assert_eq!(frame["fail_on_crash"], false, "{frame:#}");

    exec.signal(Signal::SIGKILL);
    exec.finish();
    wait_until("the crash to be contained", || {
        env.run(&["log", &op]).stdout.contains("CRASH_CONTAINED")
    });
    let status = env.run(&["--json", "status", &op]).json()[0].clone();
    assert_eq!(status["state"], "running", "{status:#}");

    std::fs::write(env.path("release"), "").expect("release");
    let out = run.finish();
    out.expect_code(0);
    env.assert_no_leftovers();
}

#[test]
fn a_failing_command_of_exec_is_reported_to_the_caller_of_exec_only() {
    let env = Env::new();
    let (run, op) = start_holding_run(&env);
    let exit_6 = ["--", "sh", "-c", "exit 6", &env.marker];
    let mut args = vec!["exec", "--operation", &op];
    args.extend_from_slice(&exit_6);
    env.run(&args).expect_code(6);
    let status = env.run(&["--json", "status", &op]).json()[0].clone();
    assert_eq!(status["state"], "running", "{status:#}");

    std::fs::write(env.path("release"), "").expect("release");
    run.finish().expect_code(0);
    env.assert_no_leftovers();
}

#[test]
fn a_worker_of_another_operation_is_an_outsider_whose_exec_crash_fails_the_operation() {
    let env = Env::new();
    let (run, op) = start_holding_run(&env);
    // A worker of another run joins `op` with `exec --operation`.
    let script = format!("exec tom-ledger exec --operation {op} -- worker-hang \"$0\"");
    let mut other = Live::start(env.cmd(&["run", "--", "sh", "-c", &script, &env.marker]));
    other.wait_for_line("the hanging worker's ready", |l| l == "ready");
    let frame = exec_frame(&env, &op);
    assert_eq!(frame["fail_on_crash"], true, "{frame:#}");
    assert!(frame["parent_call"].is_null(), "{frame:#}");
    let status = env.run(&["--json", "status", &op]).json()[0].clone();
    let exec_pid = status["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == frame["participant"]))
        .and_then(|p| p["pid"].as_i64())
        .expect("the exec participant's pid") as i32;

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(exec_pid), Signal::SIGKILL)
        .expect("kill exec");
    run.finish().expect_code(1);
    other.finish().expect_code(1);
    assert!(!env.path("held.tmp").exists());
    env.assert_no_leftovers();
}
