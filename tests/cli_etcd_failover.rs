//! `tom-ledger run --etcd` on a 3-member cluster whose leader is SIGKILLed in the middle
//! of a run of 200 workers: the run moves to the live members and completes, with no
//! failed call and every call's start and end in the ledger.
#![cfg(feature = "etcd")]

mod cli_common;
mod etcd_common;

use cli_common::{Env, Live, plan, worker};
use etcd_common::Etcd;

const WORKERS: usize = 200;

#[test]
fn a_run_survives_the_loss_of_the_leader() {
    let mut etcd = Etcd::cluster(3);
    let env = Env::new();
    let list = etcd.endpoint_list();
    let workers: Vec<String> = (0..WORKERS)
        .map(|i| worker(&env, &format!("w{i}"), "exit 0", ""))
        .collect();
    let plan = plan(&env, &workers);
    let mut live =
        Live::start(env.bare(&["--etcd", &list, "--json", "run", "-j", "8", "--plan", &plan]));
    // A tenth of the workers are through: the run is well under way.
    let finished = std::cell::Cell::new(0);
    live.wait_for_line("the first workers finishing", |line| {
        if line.contains("\"worker_finished\"") {
            finished.set(finished.get() + 1);
        }
        finished.get() >= WORKERS / 10
    });
    let leader = etcd.leader();
    etcd.members[leader].kill();
    let out = live.finish();
    out.expect_code(0);
    let finished = out.events("worker_finished");
    assert_eq!(finished.len(), WORKERS, "{}", out.stderr);
    assert!(
        finished.iter().all(|f| f["status"] == "ok"),
        "a worker failed: {}",
        out.stdout
    );
    // The ledger has every call: spawned and completed once each, none failed.
    let ls = cli_common::run(env.bare(&["--etcd", &list, "--json", "ls"]));
    ls.expect_code(0);
    let ops = ls.json();
    assert_eq!(ops.len(), 1, "{}", ls.stdout);
    assert_eq!(ops[0]["state"], "completed");
    let op = ops[0]["operation"].as_str().unwrap().to_string();
    let log = cli_common::run(env.bare(&["--etcd", &list, "log", &op]));
    log.expect_code(0);
    let count = |what: &str| log.stdout.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("CALL_SPAWNED"), WORKERS, "{}", log.stdout);
    assert_eq!(count("CALL_COMPLETED"), WORKERS, "{}", log.stdout);
    assert_eq!(count("CALL_FAILED"), 0, "{}", log.stdout);
    env.assert_no_leftovers();
}
