//! The command through a ledger server (`--server URL`, `TOM_LEDGER_URL`): a run whose
//! workers call nested `exec` and `temp` with no flags, the read-only commands and
//! `abort`, and a run that goes on while the server is restarted.

mod cli_common;
mod common;

use std::process::Command;

use cli_common::{Env, Live, index_of, wait_until};
use common::server::ServerProcess;

/// `tom-ledger --server URL --token-file F ARGS...` in the test's directory.
fn through(env: &Env, server: &ServerProcess, args: &[&str]) -> Command {
    let token_file = server.token_file();
    let mut all = vec!["--server", server.url.as_str(), "--token-file"];
    all.push(token_file.to_str().unwrap());
    all.extend_from_slice(args);
    env.bare(&all)
}

#[test]
fn a_remote_run_shows_every_nested_call() {
    let env = Env::new();
    let server = ServerProcess::start();
    let script = "tom-ledger temp add $D/nested.tmp && touch $D/nested.tmp \
        && tom-ledger exec --description inner -- sh -c 'echo \"$TOM_LEDGER_URL $TOM_LEDGER_DIR\" > $D/inner.env' $0 \
        && test -n \"$TOM_LEDGER_TOKEN\" \
        && tom-ledger exec --description failing -- sh -c 'exit 3' $0; echo $? > $D/inner.code; exit 5";
    let out = cli_common::run(through(
        &env,
        &server,
        &["--json", "run", "--", "sh", "-c", script, &env.marker],
    ));
    out.expect_code(1);
    let events = out.json();
    let finished = &events[index_of(&events, "worker_finished", "sh")];
    assert_eq!(finished["exit_code"], 5);
    let code = std::fs::read_to_string(env.path("inner.code")).unwrap();
    assert_eq!(code.trim(), "3", "exec passes the status through");
    let inner = std::fs::read_to_string(env.path("inner.env")).unwrap();
    assert_eq!(
        inner.trim(),
        server.url,
        "nested workers get the url, no directory"
    );
    assert!(
        !env.path("nested.tmp").exists(),
        "the nested temp resource is deleted when the run fails"
    );
    assert!(
        !env.ledger.exists(),
        "nothing was written to a local ledger"
    );

    let ls = cli_common::run(through(&env, &server, &["--json", "ls"]));
    ls.expect_code(0);
    let ops = ls.json();
    assert_eq!(ops.len(), 1, "{ops:?}");
    let op = ops[0]["operation"].as_str().unwrap().to_string();
    let log = cli_common::run(through(&env, &server, &["log", &op])).stdout;
    // The run's own call, both nested exec calls, and the temp command's visit.
    assert_eq!(
        log.matches("CALL_SPAWNED callId=call_run-").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("CALL_SPAWNED callId=call_exec-").count(),
        2,
        "{log}"
    );
    for needle in [
        "CALL_COMPLETED callId=call_exec-",
        "exited with code 3",
        "PARTICIPANT_JOINED participant=temp-",
        "CLEANUP_COMPLETED",
    ] {
        assert!(log.contains(needle), "no `{needle}` in the log:\n{log}");
    }
    env.assert_no_leftovers();
}

#[test]
fn status_and_abort_through_the_environment() {
    let env = Env::new();
    let server = ServerProcess::start();
    let p = cli_common::plan(
        &env,
        &[cli_common::worker(
            &env,
            "holder",
            "touch $D/ready; while [ ! -e $D/release ]; do sleep 0.01; done",
            "",
        )],
    );
    let with_env = |mut c: Command| {
        c.env("TOM_LEDGER_URL", &server.url)
            .env("TOM_LEDGER_TOKEN", &server.token);
        c
    };
    let mut run = Live::start(with_env(env.bare(&["--json", "run", "--plan", &p])));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    let op = started["operation"].as_str().unwrap().to_string();
    wait_until("the worker to run", || env.path("ready").exists());
    // The worker's frame is recorded just after it starts (group commit): its `ready`
    // file can come first.
    let status = std::cell::RefCell::new(serde_json::Value::Null);
    wait_until("status to show the worker's call", || {
        let out = cli_common::run(with_env(env.bare(&["--json", "status", &op])));
        out.expect_code(0);
        let now = out.json()[0].clone();
        let shown = !now["frames"][0].is_null();
        *status.borrow_mut() = now;
        shown
    });
    let status = status.into_inner();
    assert_eq!(status["state"], "running");
    assert_eq!(status["frames"][0]["description"], "holder");
    cli_common::run(with_env(env.bare(&["abort", &op]))).expect_code(0);
    let out = run.finish();
    assert_ne!(out.code(), 0, "an aborted run fails");
    let events = out.json();
    assert!(
        events.iter().any(|e| e["event"] == "operation_finished"),
        "{events:?}"
    );
    env.assert_no_leftovers();
}

#[test]
fn a_run_goes_on_while_its_server_restarts() {
    let env = Env::new();
    let mut server = ServerProcess::start();
    let p = cli_common::plan(
        &env,
        &[
            cli_common::worker(
                &env,
                "first",
                "touch $D/ready; while [ ! -e $D/release ]; do sleep 0.01; done",
                "",
            ),
            cli_common::worker(
                &env,
                "second",
                "tom-ledger exec -- true",
                "after = [\"first\"]",
            ),
        ],
    );
    let mut run = Live::start(through(&env, &server, &["--json", "run", "--plan", &p]));
    run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    wait_until("the worker to run", || env.path("ready").exists());
    server.restart();
    std::fs::write(env.path("release"), "").unwrap();
    let out = run.finish();
    assert_eq!(out.code(), 0, "stderr: {}", out.stderr);
    let events = out.json();
    let second = &events[index_of(&events, "worker_finished", "second")];
    assert_eq!(second["exit_code"], 0);
    env.assert_no_leftovers();
}
