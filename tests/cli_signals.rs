//! Signals to `run`: the first stops every worker through the stop ladder, deletes the
//! temp resources, records the operation as failed and exits 128+N; a second one kills
//! at once. Nothing of the run stays alive.

mod cli_common;

use std::time::{Duration, Instant};

use cli_common::{Env, Live, index_of, only_operation, plan, wait_until, worker};
use nix::sys::signal::Signal;

fn start_run(env: &Env, workers: &[String], extra: &[&str]) -> Live {
    let p = plan(env, workers);
    let mut args = vec!["--json", "run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--plan", &p]);
    Live::start(env.cmd(&args))
}

#[test]
fn ctrl_c_stops_workers_and_nested_commands_and_deletes_temp_resources() {
    let env = Env::new();
    let workers = [
        worker(
            &env,
            "sleeper",
            "touch $D/own.tmp $D/sleeper.ready; exec sleep 60",
            "temp = [\"own.tmp\"]",
        ),
        worker(
            &env,
            "nested",
            "tom-ledger temp add $D/nested.tmp && touch $D/nested.tmp && \
             tom-ledger exec -- sh -c 'touch $D/inner.ready; exec sleep 60' $0",
            "",
        ),
    ];
    let mut run = start_run(&env, &workers, &["-j", "2"]);
    run.wait_for_line("two workers started", |l| {
        l.contains("\"name\":\"nested\"") && l.contains("worker_started")
    });
    wait_until("the workers to be ready", || {
        env.path("sleeper.ready").exists() && env.path("inner.ready").exists()
    });
    assert!(env.path("own.tmp").exists() && env.path("nested.tmp").exists());
    let interrupted = Instant::now();
    run.signal(Signal::SIGINT);
    let out = run.finish();
    out.expect_code(130);
    assert!(interrupted.elapsed() < Duration::from_secs(30));
    let events = out.json();
    for name in ["sleeper", "nested"] {
        assert_eq!(
            events[index_of(&events, "worker_finished", name)]["status"],
            "cancelled"
        );
    }
    let end = events.last().unwrap();
    assert_eq!(end["event"], "operation_finished");
    assert_eq!(end["state"], "failed");
    assert_eq!(end["exit_code"], 130);
    assert_eq!(end["reason"], "interrupted by SIGINT");
    env.assert_no_leftovers();
    assert!(
        !env.path("own.tmp").exists(),
        "the worker's temp resource is left"
    );
    assert!(
        !env.path("nested.tmp").exists(),
        "the nested temp resource is left"
    );
    let op = only_operation(&env);
    let status = env.run(&["--json", "status", &op]).json()[0].clone();
    assert_eq!(status["state"], "failed");
    assert_eq!(status["archived"], true);
    assert_eq!(status["temp_resources"], serde_json::json!([]));
}

#[test]
fn sigterm_exits_143() {
    let env = Env::new();
    let mut run = start_run(
        &env,
        &[worker(&env, "w", "touch $D/ready; exec sleep 60", "")],
        &[],
    );
    run.wait_for_line("worker_started", |l| l.contains("worker_started"));
    wait_until("the worker to run", || env.path("ready").exists());
    run.signal(Signal::SIGTERM);
    let out = run.finish();
    out.expect_code(143);
    assert_eq!(
        out.json().last().unwrap()["reason"],
        "interrupted by SIGTERM"
    );
    env.assert_no_leftovers();
}

#[test]
fn a_second_ctrl_c_kills_workers_that_ignore_sigterm() {
    let env = Env::new();
    let stubborn = "trap 'echo term >> $D/got-term' TERM; touch $D/ready; \
                    while :; do sleep 0.05; done";
    let mut run = start_run(
        &env,
        &[worker(&env, "stubborn", stubborn, "")],
        &["--grace", "120s"],
    );
    run.wait_for_line("worker_started", |l| l.contains("worker_started"));
    wait_until("the worker to run", || env.path("ready").exists());
    let begun = Instant::now();
    run.signal(Signal::SIGINT);
    wait_until("the worker to get SIGTERM", || {
        env.path("got-term").exists()
    });
    run.signal(Signal::SIGINT);
    let out = run.finish();
    out.expect_code(130);
    assert!(
        begun.elapsed() < Duration::from_secs(60),
        "the second Ctrl+C waited for the grace"
    );
    let events = out.json();
    let f = &events[index_of(&events, "worker_finished", "stubborn")];
    assert_eq!(f["status"], "cancelled");
    assert_eq!(f["signal"], 9);
    env.assert_no_leftovers();
}
