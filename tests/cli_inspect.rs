//! The inspection commands against operations made through the library: `ls`, `status`,
//! `log`, `abort`, `trace`, `recover`, with and without `--json`. Read-only commands leave
//! the ledger directory exactly as it was.

mod cli_common;

use std::time::Duration;

use cli_common::{Env, Live};
use serde_json::Value;
use tom_dist_ledger::ledger::{CallOptions, OperationOptions};
use tom_dist_ledger::{Connect, Ledger, ParticipantId};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A ledger participant in this test process; heartbeats are rare so files stay still.
fn connect(rt: &tokio::runtime::Runtime, env: &Env, participant: &str) -> Ledger {
    rt.block_on(Ledger::connect(
        Connect::local(&env.ledger)
            .participant(ParticipantId::parse(participant).expect("id"))
            .heartbeat_interval(Duration::from_secs(3600)),
    ))
    .expect("connect")
}

fn bounded<T>(rt: &tokio::runtime::Runtime, f: impl std::future::Future<Output = T>) -> T {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
        .expect("library call hung")
}

/// Wait until the operation has seen `writes` modifications (its first heartbeat among
/// them), so that nothing of this participant is still on its way to the file.
fn settle(
    rt: &tokio::runtime::Runtime,
    ledger: &Ledger,
    op: &tom_dist_ledger::OperationId,
    writes: u64,
) {
    bounded(rt, async {
        while ledger.store().read(op).await.expect("read").seq < writes {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn ls_and_status_show_live_and_archived_operations_without_changing_them() {
    let env = Env::new();
    let rt = runtime();
    let ledger = connect(&rt, &env, "tester");
    let done = bounded(
        &rt,
        ledger.create_operation(OperationOptions::new().description("beta")),
    )
    .unwrap();
    bounded(&rt, done.complete()).unwrap();
    let live = bounded(
        &rt,
        ledger.create_operation(OperationOptions::new().description("alpha")),
    )
    .unwrap();
    let call = bounded(
        &rt,
        live.start_call::<()>(CallOptions::new().description("compile")),
    )
    .unwrap();
    let temp = env.path("scratch");
    bounded(&rt, live.register_temp_resource(&temp)).unwrap();
    settle(&rt, &ledger, live.operation_id(), 3);
    // No background writes from here on: what follows must not change a byte.
    bounded(&rt, ledger.dispose());
    let before = env.ledger_snapshot();

    let out = env.run(&["ls"]);
    out.expect_code(0);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    // Sorted by start time; two operations started within the same millisecond come in
    // the order of their ids.
    if lines[0].starts_with(live.operation_id().as_str()) {
        lines.swap(0, 1);
    }
    assert!(
        lines[0].starts_with(done.operation_id().as_str()),
        "{}",
        out.stdout
    );
    assert!(
        lines[0].contains("archived")
            && lines[0].contains("completed")
            && lines[0].ends_with("beta")
    );
    assert!(lines[1].starts_with(live.operation_id().as_str()));
    assert!(
        lines[1].contains("live") && lines[1].contains("running") && lines[1].contains("frames 1")
    );

    let out = env.run(&["--json", "ls"]);
    out.expect_code(0);
    let mut ops = out.json();
    assert_eq!(ops.len(), 2);
    if ops[0]["operation"] == live.operation_id().as_str() {
        ops.swap(0, 1);
    }
    assert_eq!(ops[1]["operation"], live.operation_id().as_str());
    assert_eq!(ops[1]["state"], "running");
    assert_eq!(ops[1]["archived"], false);
    assert_eq!(ops[1]["call_frames"], 1);
    assert_eq!(ops[1]["temp_resources"], 1);
    assert_eq!(ops[0]["archived"], true);

    let out = env.run(&["status", live.operation_id().as_str()]);
    out.expect_code(0);
    let text = &out.stdout;
    assert!(text.contains("state        running"), "{text}");
    assert!(text.contains("tester  alive"), "{text}");
    assert!(
        text.contains(call.call_id().as_str()) && text.contains("compile"),
        "{text}"
    );
    assert!(text.contains(temp.to_str().unwrap()), "{text}");

    let out = env.run(&["status", "--json", live.operation_id().as_str()]);
    out.expect_code(0);
    let status = &out.json()[0];
    assert_eq!(status["participants"][0]["id"], "tester");
    assert_eq!(status["participants"][0]["alive"], true);
    assert_eq!(status["frames"][0]["call"], call.call_id().as_str());
    assert_eq!(status["frames"][0]["description"], "compile");
    assert!(status["frames"][0]["age_ms"].as_i64().is_some());
    assert_eq!(status["temp_resources"][0]["path"], temp.to_str().unwrap());

    // Without an id: the live operations only.
    let out = env.run(&["--json", "status"]);
    out.expect_code(0);
    let all = out.json();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["operation"], live.operation_id().as_str());

    let out = env.run(&["status", done.operation_id().as_str()]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("state        completed, archived"),
        "{}",
        out.stdout
    );

    for args in [
        &["log", live.operation_id().as_str()][..],
        &["trace", live.operation_id().as_str()],
        &["recover"],
    ] {
        env.run(args).expect_code(0);
    }
    cli_common::assert_same(
        &before,
        &env.ledger_snapshot(),
        "read-only commands changed the ledger",
    );
    bounded(&rt, call.end(())).unwrap();
}

#[test]
fn log_prints_the_log_and_follows_it_until_the_operation_ends() {
    let env = Env::new();
    let rt = runtime();
    let ledger = connect(&rt, &env, "tester");
    let op = bounded(&rt, ledger.create_operation(OperationOptions::new())).unwrap();
    bounded(&rt, op.log("first line", tom_dist_ledger::LogLevel::Info)).unwrap();
    let id = op.operation_id().to_string();

    let out = env.run(&["log", &id]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("[INFO] OPERATION_CREATED initiator=tester"),
        "{}",
        out.stdout
    );
    assert!(lines.iter().any(|l| l.ends_with("[INFO] first line")));

    let mut follow = Live::start(env.cmd(&["log", "--follow", &id]));
    follow.wait_for_line("the existing log", |l| l.ends_with("first line"));
    bounded(
        &rt,
        op.log("second line", tom_dist_ledger::LogLevel::Warning),
    )
    .unwrap();
    follow.wait_for_line("the new line", |l| l.ends_with("[WARNING] second line"));
    bounded(&rt, op.complete()).unwrap();
    follow.wait_for_line("the end of the operation", |l| {
        l.contains("OPERATION_COMPLETED")
    });
    follow.finish().expect_code(0);

    // An archived operation's log is still there.
    let out = env.run(&["log", &id]);
    out.expect_code(0);
    assert!(out.stdout.contains("OPERATION_COMPLETED"));
}

#[test]
fn abort_sets_the_flag_and_participants_see_it() {
    let env = Env::new();
    let rt = runtime();
    let ledger = connect(&rt, &env, "tester");
    let op = bounded(&rt, ledger.create_operation(OperationOptions::new())).unwrap();
    let id = op.operation_id().to_string();
    let out = env.run(&["abort", &id]);
    out.expect_code(0);
    assert_eq!(
        out.stdout.trim(),
        format!("abort requested for operation {id}")
    );
    bounded(&rt, op.aborted());
    let (data, archived) = bounded(&rt, ledger.read_operation(op.operation_id())).unwrap();
    assert!(data.aborted && !archived);
    let log = env.run(&["log", &id]).stdout;
    assert!(log.contains("[WARNING] ABORT_REQUESTED by=abort-"), "{log}");

    let out = env.run(&["--json", "abort", &id]);
    out.expect_code(0);
    assert_eq!(out.json()[0]["aborted"], true);

    bounded(&rt, op.complete()).unwrap();
    let before = env.ledger_snapshot();
    let out = env.run(&["abort", &id]);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        format!("tom-ledger: error: operation `{id}` is completed\n")
    );
    cli_common::assert_same(&before, &env.ledger_snapshot(), "a refused abort");
}

fn complete_events(trace: &Value) -> Vec<&Value> {
    trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "operation")
        .collect()
}

#[test]
fn trace_writes_one_complete_event_per_call() {
    let env = Env::new();
    let rt = runtime();
    let ledger = connect(&rt, &env, "tracer");
    let _runtime = rt.enter();
    let op = bounded(&rt, ledger.create_operation(OperationOptions::new())).unwrap();
    let regular = bounded(&rt, op.start_call::<()>(CallOptions::new())).unwrap();
    let ok = op.spawn_call(CallOptions::<u8>::new(), |_| async { Ok::<u8, String>(1) });
    let bad = op.spawn_call(CallOptions::<u8>::new().fail_on_crash(false), |_| async {
        Err::<u8, String>("boom".into())
    });
    bounded(&rt, ok.wait());
    bounded(&rt, bad.wait());
    bounded(&rt, regular.end(())).unwrap();
    let open = bounded(
        &rt,
        op.start_call::<()>(CallOptions::new().description("still open")),
    )
    .unwrap();
    let id = op.operation_id().to_string();

    let out = env.run(&["trace", &id]);
    out.expect_code(0);
    let trace: Value = serde_json::from_str(&out.stdout).expect("trace is JSON");
    let calls = complete_events(&trace);
    assert_eq!(calls.len(), 4, "{trace:#}");
    let by_call = |c: &str| {
        *calls
            .iter()
            .find(|e| e["args"]["call"] == c)
            .unwrap_or_else(|| panic!("no event for {c}"))
    };
    assert_eq!(by_call(regular.call_id().as_str())["args"]["outcome"], "ok");
    assert_eq!(by_call(ok.call_id().as_str())["args"]["outcome"], "ok");
    assert_eq!(by_call(bad.call_id().as_str())["args"]["outcome"], "failed");
    assert_eq!(by_call(bad.call_id().as_str())["args"]["error"], "boom");
    let still = by_call(open.call_id().as_str());
    assert_eq!(still["args"]["outcome"], "running");
    assert_eq!(still["name"], "still open");
    for e in &calls {
        assert!(
            e["ts"].as_i64().unwrap() >= 0 && e["dur"].as_i64().unwrap() >= 0,
            "{e}"
        );
        assert_eq!(
            e["pid"], calls[0]["pid"],
            "one participant, one trace process"
        );
    }
    let meta =
        trace["traceEvents"].as_array().unwrap().iter().any(|e| {
            e["ph"] == "M" && e["name"] == "process_name" && e["args"]["name"] == "tracer"
        });
    assert!(meta, "participant named in the metadata");

    let file = env.path("trace.json");
    env.run(&["trace", &id, "-o", file.to_str().unwrap()])
        .expect_code(0);
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(complete_events(&written).len(), 4);
    bounded(&rt, open.end(())).unwrap();
    bounded(&rt, op.complete()).unwrap();
}

/// A pid that belonged to a process that has exited.
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    child.wait().expect("wait");
    child.id() as i32
}

#[test]
fn recover_reports_operations_whose_participants_are_all_dead() {
    let env = Env::new();
    let rt = runtime();
    let ghost = rt
        .block_on(Ledger::connect(
            Connect::local(&env.ledger)
                .participant(ParticipantId::parse("ghost").unwrap())
                .pid(dead_pid())
                .heartbeat_interval(Duration::from_secs(3600)),
        ))
        .unwrap();
    let dead = bounded(&rt, ghost.create_operation(OperationOptions::new())).unwrap();
    bounded(&rt, dead.start_call::<()>(CallOptions::new()))
        .map(std::mem::forget)
        .unwrap();
    settle(&rt, &ghost, dead.operation_id(), 2);
    bounded(&rt, ghost.dispose());
    let alive = connect(&rt, &env, "alive");
    let live = bounded(&rt, alive.create_operation(OperationOptions::new())).unwrap();
    settle(&rt, &alive, live.operation_id(), 1);
    bounded(&rt, alive.dispose());
    let before = env.ledger_snapshot();

    let out = env.run(&["recover", "--dry-run"]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert!(
        lines[0].starts_with(dead.operation_id().as_str()),
        "{}",
        out.stdout
    );
    assert!(
        lines[0].contains("every participant is dead (ghost)") && lines[0].contains("frames 1")
    );

    let out = env.run(&["--json", "recover", "--dry-run"]);
    out.expect_code(0);
    let report = out.json();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0]["dead_participants"][0], "ghost");

    let out = env.run(&["--json", "status", dead.operation_id().as_str()]);
    assert_eq!(out.json()[0]["participants"][0]["alive"], false);
    cli_common::assert_same(
        &before,
        &env.ledger_snapshot(),
        "the report changes nothing",
    );

    // Without --dry-run the dead operation is archived as failed; the live one stays.
    let out = env.run(&["recover"]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    let expected = format!(
        "recovered operation {} (dead: ghost): stopped 0 worker groups",
        dead.operation_id()
    );
    assert!(lines[0].starts_with(&expected), "{}", out.stdout);
    assert!(
        lines[0].contains("archived as failed to "),
        "{}",
        out.stdout
    );
    let out = env.run(&["--json", "status", dead.operation_id().as_str()]);
    assert_eq!(out.json()[0]["state"], "failed");
    assert_eq!(out.json()[0]["archived"], true);
    let out = env.run(&["--json", "status", live.operation_id().as_str()]);
    assert_eq!(out.json()[0]["state"], "running");
    assert_eq!(env.run(&["recover"]).stdout, "nothing to recover\n");
    drop(live);
}
