//! A `run` killed with SIGKILL leaves workers' descendants and temp files behind; its call
//! frames record each worker's process (pid, group, start time, command), so `recover`,
//! or the next `run` on the same ledger, stops what is left and deletes the temp files.

mod cli_common;

use std::os::unix::process::ExitStatusExt;

use cli_common::{Env, Live, WATCHDOG, processes_with, wait_bounded, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");

/// Workers started by each run of these tests.
const WORKERS: usize = 2;
/// Children each worker forks.
const CHILDREN: usize = 2;

/// A killed run: its operation id, the workers' pids, and the temp files it registered.
struct Killed {
    op: String,
    pids: Vec<i64>,
    temps: Vec<std::path::PathBuf>,
}

/// Start a run of fork-tree workers with a temp file each, check that `status` shows
/// every worker's process, and SIGKILL the run once every process of the tree runs.
fn killed_run(env: &Env) -> Killed {
    let mut plan = String::new();
    let mut temps = Vec::new();
    for i in 0..WORKERS {
        let temp = env.write(&format!("w{i}.tmp"), "scratch");
        plan.push_str(&format!(
            "[[worker]]\nname = \"w{i}\"\ncmd = [\"{FORK_TREE}\", \"{CHILDREN}\", \"--marker\", \"{}\"]\ntemp = [\"{}\"]\n\n",
            env.marker,
            temp.display()
        ));
        temps.push(temp);
    }
    let plan = env.write("plan.toml", &plan);
    let plan = plan.to_str().expect("utf-8 path");
    let mut run =
        Live::start(env.cmd(&["--json", "run", "-j", &WORKERS.to_string(), "--plan", plan]));
    let started = run.wait_for_line("operation_started", |l| l.contains("\"operation_started\""));
    let op = serde_json::from_str::<Value>(&started).expect("event")["operation"]
        .as_str()
        .expect("operation id")
        .to_string();
    let mut pids = Vec::new();
    while pids.len() < WORKERS {
        let line = run.wait_for_line("worker_started", |l| l.contains("\"worker_started\""));
        let event: Value = serde_json::from_str(&line).expect("event");
        pids.push(event["pid"].as_i64().expect("pid"));
    }
    // Every frame records its worker's process.
    let out = env.run(&["--json", "status", &op]);
    out.expect_code(0);
    let frames = out.json()[0]["frames"].as_array().expect("frames").clone();
    assert_eq!(frames.len(), WORKERS, "{frames:#?}");
    for f in &frames {
        let process = &f["process"];
        assert!(pids.contains(&process["pid"].as_i64().expect("pid")), "{f}");
        assert_eq!(
            process["pgid"], process["pid"],
            "a worker leads its own group"
        );
        assert_eq!(process["command"][0], FORK_TREE, "{f}");
    }
    let text = env.run(&["status", &op]).stdout;
    assert!(
        text.contains(&format!("process {} (group {})", pids[0], pids[0])),
        "{text}"
    );
    let everything = WORKERS * (1 + CHILDREN);
    wait_until("every process of the trees to run", || {
        processes_with(&env.marker).len() == everything
    });

    run.signal(Signal::SIGKILL);
    // Not `finish`: what is left of the workers holds the run's stderr open.
    let status = wait_bounded(&mut run.child, WATCHDOG);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    // The workers die with the run (parent-death signal); their children stay behind.
    wait_until("the workers to die with the run", || {
        processes_with(&env.marker).len() == WORKERS * CHILDREN
    });
    assert!(temps.iter().all(|t| t.exists()));
    Killed { op, pids, temps }
}

/// The killed run's operation is archived as failed with nothing of it left.
fn assert_cleaned_up(env: &Env, killed: &Killed) {
    env.assert_no_leftovers();
    for t in &killed.temps {
        assert!(!t.exists(), "temp file left: {}", t.display());
    }
    let out = env.run(&["--json", "status", &killed.op]);
    out.expect_code(0);
    let status = &out.json()[0];
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(status["archived"], true, "{status:#}");
    assert_eq!(status["temp_resources"], serde_json::json!([]));
}

#[test]
fn recover_stops_what_a_killed_run_left_and_deletes_its_temp_files() {
    let env = Env::new();
    let killed = killed_run(&env);
    assert!(!killed.pids.is_empty());

    let out = env.run(&["recover", "--dry-run"]);
    out.expect_code(0);
    assert!(out.stdout.starts_with(&killed.op), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "workers {WORKERS}  temp {WORKERS}  needs recovery"
        )),
        "{}",
        out.stdout
    );
    assert_eq!(
        processes_with(&env.marker).len(),
        WORKERS * CHILDREN,
        "a dry run stops nothing"
    );

    let out = env.run(&["--json", "recover"]);
    out.expect_code(0);
    let report = out.json();
    assert_eq!(report.len(), 1, "{report:#?}");
    let r = &report[0];
    assert_eq!(r["operation"], killed.op.as_str());
    assert_eq!(r["recovered"], true);
    assert_eq!(r["state"], "failed");
    assert_eq!(r["stopped_workers"], WORKERS);
    assert_eq!(
        r["deleted_temp_resources"].as_array().map(Vec::len),
        Some(WORKERS)
    );
    let dead = r["dead_participants"]
        .as_array()
        .expect("dead participants");
    assert!(
        dead.len() == 1 && dead[0].as_str().is_some_and(|p| p.starts_with("run-")),
        "{r}"
    );
    assert!(
        r["archive"].as_str().is_some_and(|a| a.contains("backup")),
        "{r}"
    );
    assert_cleaned_up(&env, &killed);

    // Nothing is left to recover.
    let out = env.run(&["recover"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "nothing to recover\n");
    let out = env.run(&["--json", "recover"]);
    out.expect_code(0);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn the_next_run_recovers_what_a_killed_run_left_before_it_starts() {
    let env = Env::new();
    let killed = killed_run(&env);

    let out = env.run(&["--json", "run", "--", "true"]);
    out.expect_code(0);
    let events = out.json();
    assert_eq!(events[0]["event"], "operation_started");
    assert_ne!(events[0]["operation"], killed.op.as_str());
    let recovered: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "operation_recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{events:#?}");
    assert_eq!(recovered[0]["operation"], killed.op.as_str());
    assert_eq!(recovered[0]["stopped_workers"], WORKERS);
    assert_eq!(recovered[0]["state"], "failed");
    assert_eq!(events.last().expect("events")["state"], "completed");
    assert_cleaned_up(&env, &killed);

    // Quiet when there is nothing to recover; plain output says what it recovered.
    let out = env.run(&["run", "--", "true"]);
    out.expect_code(0);
    assert!(!out.stderr.contains("recovered"), "{}", out.stderr);
    let env = Env::new();
    let killed = killed_run(&env);
    let out = env.run(&["run", "--", "true"]);
    out.expect_code(0);
    let line = format!("recovered operation {} (dead: run-", killed.op);
    assert!(out.stderr.contains(&line), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stopped 2 worker groups, deleted 2 temp resources, archived as failed to"),
        "{}",
        out.stderr
    );
    assert_cleaned_up(&env, &killed);
}
