//! `tom-ledger log OP --follow` ends with its operation: after a supervisor was SIGKILLed
//! (every participant dead), it says so and exits 1 instead of waiting forever.

mod cli_common;

use std::time::{Duration, Instant};

use cli_common::{Env, Live};
use nix::sys::signal::Signal;
use serde_json::Value;

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

#[test]
fn log_follow_ends_with_exit_1_once_the_supervisor_was_killed() {
    let env = Env::new();
    let mut run = Live::start(env.cmd(&["--json", "run", "--", HANG, "--marker", &env.marker]));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let event: Value = serde_json::from_str(&started).expect("JSON event");
    let op = event["operation"]
        .as_str()
        .expect("operation id")
        .to_string();
    run.wait_for_line("worker_started", |l| l.contains("worker_started"));

    let mut follow = Live::start(env.cmd(&["log", &op, "--follow"]));
    follow.wait_for_line("the log so far", |l| l.contains("OPERATION_CREATED"));
    let killed = Instant::now();
    run.signal(Signal::SIGKILL);
    let out = follow.finish();
    let took = killed.elapsed();
    out.expect_code(1);
    assert!(
        took < Duration::from_secs(30),
        "follow ended after {took:?}"
    );
    let message = out.stderr.trim_end();
    assert!(
        message.contains(&format!("operation {op} was abandoned"))
            && message.contains("tom-ledger recover"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    let _ = run.finish();

    // What the killed supervisor left is cleaned up; nothing of the test stays.
    env.run(&["recover"]).expect_code(0);
    env.assert_no_leftovers();
    // Once archived, following ends at once with success.
    env.run(&["log", &op, "--follow"]).expect_code(0);
}
