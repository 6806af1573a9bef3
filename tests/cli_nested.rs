//! Nested participation: workers of `run` call `tom-ledger exec` and `tom-ledger temp`
//! with no flags and join the enclosing operation; `status` shows a run while it runs.

mod cli_common;

use cli_common::{Env, Live, index_of, only_operation, plan, wait_until, worker};

#[test]
fn exec_and_temp_join_the_enclosing_operation() {
    let env = Env::new();
    let script = "tom-ledger temp add $D/nested.tmp && touch $D/nested.tmp \
        && tom-ledger exec -- sh -c 'echo $TOM_LEDGER_CALL > $D/inner.call' $0 \
        && echo $TOM_LEDGER_CALL > $D/outer.call \
        && tom-ledger exec --description probe -- sh -c 'exit 3' $0; echo $? > $D/inner.code; exit 5";
    let out = env.run(&["--json", "run", "--", "sh", "-c", script, &env.marker]);
    out.expect_code(1);
    let events = out.json();
    let f = &events[index_of(&events, "worker_finished", "sh")];
    assert_eq!(f["exit_code"], 5);
    assert_eq!(
        std::fs::read_to_string(env.path("inner.code"))
            .unwrap()
            .trim(),
        "3",
        "exec passes the status through"
    );
    assert!(
        !env.path("nested.tmp").exists(),
        "the nested temp resource was not deleted on failure"
    );
    let outer = std::fs::read_to_string(env.path("outer.call")).unwrap();
    let inner = std::fs::read_to_string(env.path("inner.call")).unwrap();
    assert_eq!(
        outer.trim(),
        f["call"].as_str().unwrap(),
        "workers get TOM_LEDGER_CALL"
    );
    assert!(
        inner.trim().starts_with("call_exec-"),
        "the nested command runs in its own call: {inner}"
    );

    let op = only_operation(&env);
    let status = env.run(&["--json", "status", &op]).json()[0].clone();
    let participants = status["participants"].as_array().unwrap();
    // The exec participants left in order: dropped from the registry, remembered.
    assert!(
        !participants
            .iter()
            .any(|p| p["id"].as_str().unwrap().starts_with("exec-")),
        "{status:#}"
    );
    assert_eq!(status["participants_left"], 2, "{status:#}");
    let left = status["recently_left"].as_array().unwrap();
    assert!(
        left.iter()
            .all(|p| p["id"].as_str().unwrap().starts_with("exec-")),
        "{status:#}"
    );
    assert!(
        participants
            .iter()
            .any(|p| p["id"].as_str().unwrap().starts_with("temp-"))
    );
    let log = env.run(&["log", &op]).stdout;
    assert!(
        log.contains("CALL_FAILED callId=call_exec-") && log.contains("exited with code 3"),
        "{log}"
    );
    env.assert_no_leftovers();
}

#[test]
fn exec_outside_run_with_an_explicit_operation() {
    let env = Env::new();
    // An operation kept open by a run whose worker waits for a release file.
    let p = plan(
        &env,
        &[worker(
            &env,
            "holder",
            "touch $D/ready; while [ ! -e $D/release ]; do sleep 0.01; done",
            "",
        )],
    );
    let mut run = Live::start(env.cmd(&["--json", "run", "--plan", &p]));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    let op = started["operation"].as_str().unwrap().to_string();
    run.wait_for_line("worker_started", |l| l.contains("worker_started"));
    wait_until("the worker to run", || env.path("ready").exists());

    // While it runs: status shows the live participant and the worker's frame.
    let out = env.run(&["--json", "status", &op]);
    out.expect_code(0);
    let s = &out.json()[0];
    assert_eq!(s["state"], "running");
    assert_eq!(s["participants"][0]["alive"], true);
    assert_eq!(s["frames"][0]["description"], "holder");
    let text = env.run(&["status", &op]).stdout;
    assert!(
        text.contains("frames (1)") && text.contains("holder"),
        "{text}"
    );

    let out = env.run(&[
        "exec",
        "--operation",
        &op,
        "--",
        "sh",
        "-c",
        "exit 6",
        &env.marker,
    ]);
    out.expect_code(6);
    let out = env.run(&["temp", "add", "--operation", &op, "left-over"]);
    out.expect_code(0);
    let out = env.run(&["--json", "status", &op]);
    let temps = out.json()[0]["temp_resources"].clone();
    assert_eq!(temps[0]["path"], env.path("left-over").to_str().unwrap());
    env.run(&["temp", "rm", "--operation", &op, "left-over"])
        .expect_code(0);
    let out = env.run(&["--json", "status", &op]);
    assert_eq!(out.json()[0]["temp_resources"], serde_json::json!([]));

    std::fs::write(env.path("release"), "").unwrap();
    run.finish().expect_code(0);
    env.assert_no_leftovers();
}

#[test]
fn abort_from_outside_stops_the_run() {
    let env = Env::new();
    let p = plan(
        &env,
        &[worker(
            &env,
            "sleeper",
            "touch $D/ready; tom-ledger exec -- sh -c 'exec sleep 60' $0",
            "",
        )],
    );
    let mut run = Live::start(env.cmd(&["--json", "run", "--plan", &p]));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let op = serde_json::from_str::<serde_json::Value>(&started).unwrap()["operation"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the worker to run", || env.path("ready").exists());
    env.run(&["abort", &op]).expect_code(0);
    let out = run.finish();
    out.expect_code(1);
    let events = out.json();
    let end = events.last().unwrap();
    assert_eq!(end["reason"], format!("operation `{op}` was aborted"));
    assert_eq!(
        events[index_of(&events, "worker_finished", "sleeper")]["status"],
        "cancelled"
    );
    env.assert_no_leftovers();
}
