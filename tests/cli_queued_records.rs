//! `run` records its workers' starts and ends off its main thread, several in one ledger
//! write (group commit), so the next worker starts before the last one's end is written.
//! A run SIGKILLed while such records are still queued leaves no worker behind: every
//! worker dies with it (parent-death signal), and recovery archives the operation as
//! failed without signalling anything that is not the run's.

mod cli_common;

use std::os::unix::process::ExitStatusExt;

use cli_common::{Env, Live, WATCHDOG, processes_with, wait_bounded, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const EXIT: &str = env!("CARGO_BIN_EXE_worker-exit");

fn plan_of(env: &Env, program: &str, args: &str, n: usize) -> String {
    let mut plan = String::new();
    for i in 0..n {
        plan.push_str(&format!(
            "[[worker]]\nname = \"w{i}\"\ncmd = [\"{program}\", {args}\"--marker\", \"{}\"]\n\n",
            env.marker
        ));
    }
    let path = env.write("plan.toml", &plan);
    path.to_str().expect("utf-8 path").to_string()
}

/// SIGKILL the run, wait for it, and check that it was the signal that ended it.
fn kill_run(run: &mut Live) {
    run.signal(Signal::SIGKILL);
    let status = wait_bounded(&mut run.child, WATCHDOG);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

/// `recover` archives the killed run's operation as failed, and nothing of it is left.
fn assert_recovered(env: &Env, op: &str) {
    let out = env.run(&["--json", "recover"]);
    out.expect_code(0);
    let report = out.json();
    assert_eq!(report.len(), 1, "{report:#?}");
    assert_eq!(report[0]["operation"], op);
    assert_eq!(report[0]["state"], "failed", "{report:#?}");
    let out = env.run(&["--json", "status", op]);
    out.expect_code(0);
    let status = &out.json()[0];
    assert_eq!(status["archived"], true, "{status:#}");
    assert_eq!(status["state"], "failed", "{status:#}");
    env.assert_no_leftovers();
}

fn operation_of(run: &mut Live) -> String {
    let started = run.wait_for_line("operation_started", |l| l.contains("\"operation_started\""));
    serde_json::from_str::<Value>(&started).expect("event")["operation"]
        .as_str()
        .expect("operation id")
        .to_string()
}

/// Many workers start at once, so their frames are written together, after they run:
/// killed right after the first one is recorded, the run takes every worker down with
/// it, recorded yet or not.
#[test]
fn a_run_killed_while_worker_starts_are_queued_leaves_no_worker_behind() {
    let env = Env::new();
    let n = 40;
    let plan = plan_of(&env, HANG, "", n);
    let mut run = Live::start(env.cmd(&["--json", "run", "-j", &n.to_string(), "--plan", &plan]));
    let op = operation_of(&mut run);
    run.wait_for_line("worker_started", |l| l.contains("\"worker_started\""));
    kill_run(&mut run);
    wait_until("every worker to die with the run", || {
        processes_with(&env.marker).is_empty()
    });
    assert_recovered(&env, &op);
}

/// Short workers one after the other: killed once some have finished, while the ends of
/// the last ones (and the starts of the next) may still be queued, the run leaves no
/// worker behind, and recovery signals nothing (the recorded processes are gone).
#[test]
fn a_run_killed_while_worker_ends_are_queued_leaves_no_worker_behind() {
    let env = Env::new();
    let plan = plan_of(&env, EXIT, "\"0\", ", 400);
    let mut run = Live::start(env.cmd(&["--json", "run", "-j", "2", "--plan", &plan]));
    let op = operation_of(&mut run);
    for _ in 0..20 {
        run.wait_for_line("worker_finished", |l| l.contains("\"worker_finished\""));
    }
    kill_run(&mut run);
    wait_until("every worker to die with the run", || {
        processes_with(&env.marker).is_empty()
    });
    let out = env.run(&["--json", "recover"]);
    out.expect_code(0);
    let report = out.json();
    assert_eq!(report.len(), 1, "{report:#?}");
    assert_eq!(report[0]["operation"], op.as_str());
    assert_eq!(report[0]["state"], "failed", "{report:#?}");
    assert_eq!(
        report[0]["stopped_workers"], 0,
        "no recorded worker was alive: {report:#?}"
    );
    env.assert_no_leftovers();
}
