//! `tom-ledger run` end to end with real processes: ordering, `-j`, the failure policy,
//! timeouts, retries, temp resources, result kinds, exit statuses, and the ledger it leaves.

mod cli_common;

use std::time::{Duration, Instant};

use cli_common::{Env, index_of, of_worker, only_operation, plan, worker};
use serde_json::Value;

fn finished(events: &[Value], name: &str) -> Value {
    events[index_of(events, "worker_finished", name)].clone()
}

fn operation_finished(events: &[Value]) -> Value {
    let last = events.last().expect("events").clone();
    assert_eq!(last["event"], "operation_finished", "{events:#?}");
    last
}

/// State of the operation as `status --json` reports it.
fn archived_state(env: &Env) -> String {
    let op = only_operation(env);
    let out = env.run(&["--json", "status", &op]);
    out.expect_code(0);
    let s = &out.json()[0];
    assert_eq!(s["archived"], true, "{s}");
    s["state"].as_str().unwrap().to_string()
}

#[test]
fn after_orders_the_workers_and_json_is_all_there_is_on_stdout() {
    let env = Env::new();
    let p = plan(
        &env,
        &[
            worker(&env, "a", "echo noise from a; echo more noise >&2", ""),
            worker(&env, "b", "echo noise from b", "after = [\"a\"]"),
            worker(&env, "c", "true", "after = [\"b\", \"a\"]"),
            worker(&env, "d", "true", ""),
        ],
    );
    let out = env.run(&["--json", "run", "-j", "4", "--plan", &p]);
    out.expect_code(0);
    let events = out.json();
    assert_eq!(events[0]["event"], "operation_started");
    assert_eq!(events[0]["ledger"], env.ledger.to_str().unwrap());
    assert!(index_of(&events, "worker_finished", "a") < index_of(&events, "worker_started", "b"));
    assert!(index_of(&events, "worker_finished", "b") < index_of(&events, "worker_started", "c"));
    for name in ["a", "b", "c", "d"] {
        let f = finished(&events, name);
        assert_eq!(f["status"], "ok", "{f}");
        assert_eq!(f["exit_code"], 0);
        assert!(f["signal"].is_null());
        assert!(f["duration_ms"].as_u64().is_some());
        let s = &events[index_of(&events, "worker_started", name)];
        assert_eq!(s["call"], f["call"]);
        assert!(s["pid"].as_i64().unwrap() > 0);
    }
    let end = operation_finished(&events);
    assert_eq!(end["state"], "completed");
    assert_eq!(end["exit_code"], 0);
    assert_eq!(end["operation"], events[0]["operation"]);
    assert!(out.stderr.contains("noise from a") && out.stderr.contains("more noise"));
    assert_eq!(archived_state(&env), "completed");

    // The timeline: one complete event per worker, named after it, with its pid.
    let op = only_operation(&env);
    let trace = env.run(&["trace", &op]);
    trace.expect_code(0);
    let trace: Value = serde_json::from_str(&trace.stdout).unwrap();
    let calls: Vec<&Value> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "operation")
        .collect();
    assert_eq!(calls.len(), 4, "{trace:#}");
    for name in ["a", "b", "c", "d"] {
        let e = calls
            .iter()
            .find(|e| e["name"] == name)
            .expect("event per worker");
        let started = &events[index_of(&events, "worker_started", name)];
        assert_eq!(e["args"]["process"], started["pid"].to_string());
        assert_eq!(e["args"]["outcome"], "ok");
    }
    let a = calls.iter().find(|e| e["name"] == "a").unwrap();
    let b = calls.iter().find(|e| e["name"] == "b").unwrap();
    assert!(a["ts"].as_i64().unwrap() + a["dur"].as_i64().unwrap() <= b["ts"].as_i64().unwrap());
}

/// Most `+` lines without their `-` at any point of the log.
fn most_at_once(log: &str) -> i32 {
    let mut now = 0;
    let mut most = 0;
    for l in log.lines() {
        now += if l == "+" { 1 } else { -1 };
        most = most.max(now);
    }
    most
}

#[test]
fn jobs_limit_is_respected() {
    let env = Env::new();
    // Each worker waits (bounded) until two have started: with -j 2 the first two meet.
    let meet = "echo + >> $D/log; touch $D/started.$$; i=0; \
                while [ $(ls $D | grep -c started) -lt 2 ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; \
                echo - >> $D/log";
    let workers: Vec<String> = (0..6)
        .map(|i| worker(&env, &format!("w{i}"), meet, ""))
        .collect();
    let p = plan(&env, &workers);
    env.run(&["run", "-j", "2", "--plan", &p]).expect_code(0);
    let log = std::fs::read_to_string(env.path("log")).unwrap();
    assert_eq!(log.lines().count(), 12);
    assert_eq!(most_at_once(&log), 2, "{log}");

    let env = Env::new();
    let one = "echo + >> $D/log; sleep 0.02; echo - >> $D/log";
    let workers: Vec<String> = (0..4)
        .map(|i| worker(&env, &format!("w{i}"), one, ""))
        .collect();
    let p = plan(&env, &workers);
    env.run(&["run", "-j", "1", "--plan", &p]).expect_code(0);
    let log = std::fs::read_to_string(env.path("log")).unwrap();
    assert_eq!(most_at_once(&log), 1, "{log}");
}

#[test]
fn a_failure_stops_the_others_by_default() {
    let env = Env::new();
    let p = plan(
        &env,
        &[
            worker(&env, "slow", "touch $D/slow.started; exec sleep 60", ""),
            worker(
                &env,
                "bad",
                "while [ ! -e $D/slow.started ]; do sleep 0.01; done; exit 3",
                "",
            ),
            worker(
                &env,
                "dependent",
                "touch $D/dependent.ran",
                "after = [\"bad\"]",
            ),
            worker(&env, "queued", "touch $D/queued.ran", ""),
        ],
    );
    let begun = Instant::now();
    let out = env.run(&["--json", "run", "-j", "2", "--grace", "10s", "--plan", &p]);
    out.expect_code(1);
    assert!(
        begun.elapsed() < Duration::from_secs(30),
        "the sleeper was not stopped"
    );
    let events = out.json();
    let bad = finished(&events, "bad");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["exit_code"], 3);
    let slow = finished(&events, "slow");
    assert_eq!(slow["status"], "cancelled");
    assert_eq!(slow["signal"], 15);
    assert!(of_worker(&events, "dependent").is_empty() && of_worker(&events, "queued").is_empty());
    let end = operation_finished(&events);
    assert_eq!(end["state"], "failed");
    assert_eq!(end["exit_code"], 1);
    assert_eq!(end["skipped"], serde_json::json!(["dependent", "queued"]));
    assert_eq!(end["reason"], "failed: bad");
    assert!(!env.path("dependent.ran").exists() && !env.path("queued.ran").exists());
    env.assert_no_leftovers();
    assert_eq!(archived_state(&env), "failed");
}

#[test]
fn keep_going_runs_what_does_not_depend_on_the_failure() {
    let env = Env::new();
    let p = plan(
        &env,
        &[
            worker(&env, "bad", "exit 4", ""),
            worker(
                &env,
                "dependent",
                "touch $D/dependent.ran",
                "after = [\"bad\"]",
            ),
            worker(&env, "first", "true", ""),
            worker(&env, "second", "touch $D/second.ran", "after = [\"first\"]"),
            worker(&env, "tolerated", "exit 9", "fail_on_crash = false"),
            worker(&env, "after-tolerated", "true", "after = [\"tolerated\"]"),
        ],
    );
    let out = env.run(&["--json", "run", "-j", "1", "--keep-going", "--plan", &p]);
    out.expect_code(1);
    let events = out.json();
    assert_eq!(finished(&events, "bad")["exit_code"], 4);
    assert_eq!(finished(&events, "second")["status"], "ok");
    assert_eq!(finished(&events, "tolerated")["status"], "failed");
    assert_eq!(finished(&events, "after-tolerated")["status"], "ok");
    let end = operation_finished(&events);
    assert_eq!(end["skipped"], serde_json::json!(["dependent"]));
    assert_eq!(end["reason"], "failed: bad");
    assert!(env.path("second.ran").exists() && !env.path("dependent.ran").exists());
    assert_eq!(archived_state(&env), "failed");
}

#[test]
fn a_tolerated_failure_does_not_fail_the_run() {
    let env = Env::new();
    let p = plan(
        &env,
        &[worker(&env, "optional", "exit 2", "fail_on_crash = false")],
    );
    let out = env.run(&["--json", "run", "--plan", &p]);
    out.expect_code(0);
    assert_eq!(finished(&out.json(), "optional")["status"], "failed");
    assert_eq!(archived_state(&env), "completed");
}

#[test]
fn timeouts_stop_the_worker_and_retries_start_it_again() {
    let env = Env::new();
    let p = plan(
        &env,
        &[
            worker(
                &env,
                "hang",
                "exec sleep 60",
                "timeout = \"200ms\"\nretries = 1",
            ),
            worker(
                &env,
                "flaky",
                "if [ -e $D/flaky.once ]; then exit 0; fi; touch $D/flaky.once; exit 1",
                "retries = 2",
            ),
        ],
    );
    let out = env.run(&["--json", "run", "--keep-going", "--plan", &p]);
    out.expect_code(1);
    let events = out.json();
    let hang: Vec<&Value> = of_worker(&events, "hang")
        .into_iter()
        .filter(|e| e["event"] == "worker_finished")
        .collect();
    assert_eq!(hang.len(), 2, "one retry: {events:#?}");
    for (i, h) in hang.iter().enumerate() {
        assert_eq!(h["status"], "timeout");
        assert_eq!(h["signal"], 15);
        assert_eq!(h["attempt"], i as u64 + 1);
        assert_eq!(h["error"], "timed out after 200ms");
    }
    let flaky: Vec<&Value> = of_worker(&events, "flaky")
        .into_iter()
        .filter(|e| e["event"] == "worker_finished")
        .collect();
    assert_eq!(flaky.len(), 2);
    assert_eq!(flaky[0]["status"], "failed");
    assert_eq!(flaky[1]["status"], "ok");
    assert_eq!(flaky[1]["attempt"], 2);
    assert_eq!(operation_finished(&events)["reason"], "failed: hang");
    env.assert_no_leftovers();
}

#[test]
fn the_run_timeout_stops_everything() {
    let env = Env::new();
    let out = env.run(&[
        "--json",
        "run",
        "--timeout",
        "300ms",
        "--",
        "sh",
        "-c",
        "exec sleep 60",
        &env.marker,
    ]);
    out.expect_code(1);
    let events = out.json();
    assert_eq!(finished(&events, "sh")["status"], "timeout");
    let end = operation_finished(&events);
    assert_eq!(end["reason"], "the run timed out after 300ms");
    env.assert_no_leftovers();
}

#[test]
fn temp_resources_go_on_failure_and_stay_on_success() {
    let env = Env::new();
    let p = plan(
        &env,
        &[worker(
            &env,
            "maker",
            "mkdir -p $D/out/sub; touch $D/out/sub/file $D/single; exit $FAIL",
            "temp = [\"out\", \"single\"]\nenv = { FAIL = \"1\" }",
        )],
    );
    env.run(&["run", "--plan", &p]).expect_code(1);
    assert!(
        !env.path("out").exists() && !env.path("single").exists(),
        "temp resources left behind"
    );
    let op = only_operation(&env);
    let status = env.run(&["--json", "status", &op]).json()[0].clone();
    assert_eq!(status["state"], "failed");

    let env = Env::new();
    let p = plan(
        &env,
        &[worker(
            &env,
            "maker",
            "touch $D/single",
            "temp = [\"single\"]",
        )],
    );
    env.run(&["run", "--plan", &p]).expect_code(0);
    assert!(
        env.path("single").exists(),
        "a completed operation keeps its files"
    );
}

#[test]
fn stdio_and_file_workers_report_their_results() {
    let env = Env::new();
    let p = plan(
        &env,
        &[
            worker(
                &env,
                "json",
                "echo {\\\"answer\\\": 42}",
                "kind = \"stdio\"",
            ),
            worker(
                &env,
                "not-json",
                "echo hello",
                "kind = \"stdio\"\nfail_on_crash = false",
            ),
            worker(
                &env,
                "file",
                "echo [1,2] > $D/result.tmp && mv $D/result.tmp $D/result.json",
                "kind = \"file\"\nresult_file = \"result.json\"",
            ),
            worker(
                &env,
                "no-file",
                "true",
                "kind = \"file\"\nresult_file = \"never.json\"\nfail_on_crash = false",
            ),
            worker(
                &env,
                "half-written",
                "echo '{\"n\": 1}' > $D/half.json && echo '{\"n\"' > $D/half.json.tmp",
                "kind = \"file\"\nresult_file = \"half.json\"",
            ),
        ],
    );
    let out = env.run(&["--json", "run", "--plan", &p]);
    out.expect_code(0);
    let events = out.json();
    assert_eq!(
        finished(&events, "json")["result"],
        serde_json::json!({"answer": 42})
    );
    let nj = finished(&events, "not-json");
    assert_eq!(nj["status"], "failed");
    assert!(
        nj["error"]
            .as_str()
            .unwrap()
            .starts_with("stdout is not JSON"),
        "{nj}"
    );
    assert_eq!(
        finished(&events, "file")["result"],
        serde_json::json!([1, 2])
    );
    let nf = finished(&events, "no-file");
    assert_eq!(nf["status"], "failed");
    assert!(
        nf["error"]
            .as_str()
            .unwrap()
            .contains("without writing its result file"),
        "{nf}"
    );
    // The result is read and kept; what a worker left half-written beside it goes.
    assert_eq!(
        finished(&events, "half-written")["result"],
        serde_json::json!({"n": 1})
    );
    assert!(env.path("half.json").exists());
    assert!(!env.path("half.json.tmp").exists());
}

#[test]
fn exit_statuses_and_plain_output() {
    let env = Env::new();
    let out = env.run(&["run", "--", "true"]);
    out.expect_code(0);
    assert!(
        out.stdout.is_empty(),
        "plain lines go to stderr: {:?}",
        out.stdout
    );
    assert!(out.stderr.contains("started  true (pid "), "{}", out.stderr);
    assert!(out.stderr.contains("ok       true in "), "{}", out.stderr);
    assert!(
        out.stderr.lines().last().unwrap().contains("completed in"),
        "{}",
        out.stderr
    );

    let out = env.run(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo to-stdout; exit 7",
        &env.marker,
    ]);
    out.expect_code(1);
    assert_eq!(
        out.stdout, "to-stdout\n",
        "the worker's own output is untouched"
    );
    assert!(
        out.stderr.contains("failed   sh in ") && out.stderr.contains("exit status 7"),
        "{}",
        out.stderr
    );
}
