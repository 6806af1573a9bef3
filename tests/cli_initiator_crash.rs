//! A `tom-ledger run` killed with SIGKILL while a nested `tom-ledger exec` runs: the exec
//! participant sees the initiator die, fails the operation, stops its own worker and
//! archives the operation before it exits. Nothing is left running or live.

mod cli_common;

use cli_common::{Env, Live, only_operation, wait_until};
use nix::sys::signal::Signal;

#[test]
fn a_nested_exec_finishes_the_operation_of_a_killed_run() {
    let env = Env::new();
    let script =
        r#"tom-ledger exec -- sh -c 'touch "$D/ready"; exec worker-hang --marker "$0"' "$0""#;
    let mut run = Live::start(env.cmd(&["--json", "run", "--", "sh", "-c", script, &env.marker]));
    run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let ready = env.path("ready");
    wait_until("the nested worker to run", || ready.exists());
    run.signal(Signal::SIGKILL);
    let _ = run.finish();
    let op = only_operation(&env);
    wait_until("the operation archived as failed", || {
        let out = env.run(&["status", &op, "--json"]);
        out.code() == 0
            && out
                .json()
                .first()
                .is_some_and(|s| s["archived"] == true && s["state"] == "failed")
    });
    env.assert_no_leftovers();
    let log = env.run(&["log", &op]);
    assert!(
        log.stdout.contains("CRASH_DETECTED participant=run-"),
        "{}",
        log.stdout
    );
    assert!(
        log.stdout.contains("CLEANUP_COMPLETED coordinator=exec-"),
        "{}",
        log.stdout
    );
}
