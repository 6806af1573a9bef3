//! The hostile ledger: operation files whose temp resources, pids, process groups and
//! cgroups name sentinels and processes of the test, with identities that do not hold up.
//! `run`, `recover --dry-run` and `recover` leave every one of them intact, and the dry
//! run lists exactly what an explicit recover would do with what is legitimately ours: an
//! operation left by a real `tom-ledger run` killed with SIGKILL.

mod cli_common;
mod trust_common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use cli_common::{Env, Live, WATCHDOG, processes_with, wait_bounded, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use trust_common::*;

/// A real `tom-ledger run` killed with SIGKILL: its worker's children stay behind
/// (carrying the operation in their environment) and its temp file is left.
fn killed_run(env: &Env) -> (String, PathBuf, Vec<i32>) {
    let temp = env.write("legit.tmp", "scratch");
    let plan = env.write(
        "plan.toml",
        &format!(
            "[[worker]]\nname = \"w\"\ncmd = [\"{FORK_TREE}\", \"2\", \"--marker\", \"{}\"]\ntemp = [\"{}\"]\n",
            env.marker,
            temp.display()
        ),
    );
    let mut run = Live::start(env.cmd(&["--json", "run", "--plan", plan.to_str().expect("utf-8")]));
    let started = run.wait_for_line("operation_started", |l| l.contains("\"operation_started\""));
    let op = serde_json::from_str::<Value>(&started).expect("event")["operation"]
        .as_str()
        .expect("operation id")
        .to_string();
    run.wait_for_line("worker_started", |l| l.contains("\"worker_started\""));
    wait_until("the worker's children to run", || {
        processes_with(&env.marker)
            .iter()
            .filter(|&&p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|e| String::from_utf8_lossy(&e).contains(op.as_str()))
            })
            .count()
            == 3
    });
    run.signal(Signal::SIGKILL);
    let status = wait_bounded(&mut run.child, WATCHDOG);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let mut children = Vec::new();
    wait_until("the worker to die with the run", || {
        children = processes_with(&env.marker)
            .into_iter()
            .filter(|&p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|e| String::from_utf8_lossy(&e).contains(op.as_str()))
            })
            .collect();
        children.len() == 2
    });
    (op, temp, children)
}

#[test]
fn a_hostile_ledger_makes_run_and_recover_touch_nothing_that_is_not_ours() {
    let env = Env::new();
    let me = tom_dist_ledger::process::user_id();
    let mut sentinels = Vec::new();
    let mut keep = |name: &str| {
        let s = sentinel(&env, name);
        sentinels.push(s.clone());
        s
    };
    let (s1, s2, s3, s4, s5, s6, s7) = (
        keep("s1"),
        keep("s2"),
        keep("s3"),
        keep("s4"),
        keep("s5"),
        keep("s6"),
        keep("s7"),
    );
    let mut victim = bystander(&env);
    let vpid = victim.id() as i32;
    let vticks = start_ticks(vpid);
    let group = leaderless_group(&env);
    let dead = i64::from(i32::MAX - 3);
    let old = an_hour_ago();
    let fresh = stamp(now());
    let wrong_ticks = process(vpid, vpid, vticks + 1, None);
    let leaderless = process(group.pgid, group.pgid, group.leader_ticks, None);

    // 1. The original's format, heartbeat fresh: alive, whatever it names.
    let f1 = plant(
        &env,
        "h1-original-fresh",
        json!({
            "operationId": "h1-original-fresh", "operationState": "running",
            "lastHeartbeat": fresh, "callFrames": [frame("cli", 1, wrong_ticks.clone())],
            "tempResources": [temp(&s1, None, i64::from(vpid))],
        }),
    );
    // 2. A dead participant on another host: its paths are that host's.
    plant(
        &env,
        "h2-other-host",
        operation(
            "h2-other-host",
            &old,
            json!({"g": participant(dead, 1, &old, |p| p["host"] = json!("elsewhere.example"))}),
            json!([frame("g", 1, wrong_ticks.clone())]),
            json!([temp(&s2, Some("g"), dead)]),
        ),
    );
    // 3. A live participant in another PID namespace: heartbeat fresh, so alive.
    let f3 = plant(
        &env,
        "h3-other-namespace",
        operation(
            "h3-other-namespace",
            &fresh,
            json!({"g": participant(1, 1, &fresh, |p| p["pidNamespace"] = json!(1))}),
            json!([frame("g", 1, leaderless.clone())]),
            json!([temp(&s3, Some("g"), 1)]),
        ),
    );
    // 4. A file any user could have written.
    let f4 = plant(
        &env,
        "h4-world-writable",
        operation(
            "h4-world-writable",
            &old,
            json!({"g": participant(dead, 1, &old, |_| {})}),
            json!([frame("g", 1, leaderless.clone())]),
            json!([temp(&s4, Some("g"), dead)]),
        ),
    );
    std::fs::set_permissions(&f4, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    // 5. A file owned by another user.
    let f5 = plant(
        &env,
        "h5-other-owner",
        operation(
            "h5-other-owner",
            &old,
            json!({"g": participant(dead, 1, &old, |_| {})}),
            json!([frame("g", 1, wrong_ticks.clone())]),
            json!([temp(&s5, Some("g"), dead)]),
        ),
    );
    let foreign_owner = match std::os::unix::fs::chown(&f5, Some(me + 4242), None) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("sub-case skipped: cannot give a file to another user here: {e}");
            std::fs::remove_file(&f5).expect("remove the unused planted file");
            false
        }
    };
    // 6. A participant of another user; pgid 1 and a leaderless group of the test.
    plant(
        &env,
        "h6-other-user",
        operation(
            "h6-other-user",
            &old,
            json!({"g": participant(dead, 1, &old, |p| p["uid"] = json!(me + 4242))}),
            json!([
                frame("g", 1, process(i32::MAX - 7, 1, 1, None)),
                frame("g", 2, leaderless.clone()),
                frame("g", 3, wrong_ticks.clone()),
            ]),
            json!([temp(&s6, Some("g"), dead)]),
        ),
    );
    // 7. Ours in every respect but a temp registered under an unknown participant id and
    //    a worker pid taken by another process: recovered, but neither touched.
    plant(
        &env,
        "h7-unknown-owner",
        operation(
            "h7-unknown-owner",
            &old,
            json!({"g": participant(dead, 1, &old, |_| {})}),
            json!([frame("g", 1, wrong_ticks.clone())]),
            json!([temp(&s7, Some("nobody"), dead)]),
        ),
    );

    let (legit, legit_temp, legit_children) = killed_run(&env);
    // The live ones stay live whatever the load on this machine: their heartbeats beat.
    let beat = |path: &Path| {
        let text = std::fs::read_to_string(path).expect("planted file");
        let mut data: Value = serde_json::from_str(&text).expect("json");
        let fresh = stamp(now());
        data["lastHeartbeat"] = json!(fresh);
        if let Some(p) = data.get_mut("participants").and_then(|ps| ps.get_mut("g")) {
            p["lastHeartbeat"] = json!(fresh);
        }
        std::fs::write(path, serde_json::to_string_pretty(&data).expect("json")).expect("beat");
    };
    let beat_all = || {
        beat(&f1);
        beat(&f3);
    };
    beat_all();

    // The dry run lists exactly what an explicit recover would do with what is ours.
    beat_all();
    let dry = env.run(&["--json", "recover", "--dry-run"]);
    dry.expect_code(0);
    let plans = dry.json();
    let by_op = |op: &str| plans.iter().find(|p| p["operation"] == op).cloned();
    let mine = by_op(&legit).unwrap_or_else(|| panic!("{plans:#?}"));
    assert_eq!(
        mine["delete"],
        json!([legit_temp.to_str().expect("utf-8")]),
        "{mine:#}"
    );
    let mut signalled: Vec<i64> = mine["signal"]
        .as_array()
        .expect("signal")
        .iter()
        .map(|p| p["pid"].as_i64().expect("pid"))
        .collect();
    signalled.sort();
    let mut expected: Vec<i64> = legit_children.iter().map(|&p| i64::from(p)).collect();
    expected.sort();
    assert_eq!(signalled, expected, "{mine:#}");
    assert!(mine["signal"][0]["command"][0] == FORK_TREE, "{mine:#}");
    assert_eq!(mine["automatic"], true);
    for p in plans.iter().filter(|p| p["operation"] != legit.as_str()) {
        let named = p.to_string();
        for s in &sentinels {
            assert!(
                !p["delete"].to_string().contains(s.to_str().expect("utf-8")),
                "{named}"
            );
        }
        assert_eq!(p["signal"], json!([]), "{named}");
        assert_eq!(p["automatic"], false, "{named}");
    }
    for live in ["h1-original-fresh", "h3-other-namespace"] {
        assert!(by_op(live).is_none(), "{live} is alive: {plans:#?}");
    }
    let text = env.run(&["recover", "--dry-run"]);
    assert!(
        text.stdout
            .contains(&format!("would delete {}", legit_temp.display())),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!(
            "would signal pid {} ({FORK_TREE}",
            legit_children[0]
        )),
        "{}",
        text.stdout
    );

    // `run` recovers its own abandoned operation and nothing else.
    beat_all();
    let out = env.run(&["--json", "run", "--", "true"]);
    out.expect_code(0);
    let recovered: Vec<Value> = out.events("operation_recovered");
    let ops: Vec<&str> = recovered
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert!(ops.contains(&legit.as_str()), "{}", out.stdout);
    assert!(
        ops.iter()
            .all(|op| *op == legit || *op == "h7-unknown-owner"),
        "{}",
        out.stdout
    );
    assert!(!legit_temp.exists());
    for pid in &legit_children {
        wait_until("the killed run's leftovers to be stopped", || {
            !running(*pid)
        });
    }
    for op in [
        "h2-other-host",
        "h4-world-writable",
        "h5-other-owner",
        "h6-other-user",
    ] {
        if op == "h5-other-owner" && !foreign_owner {
            continue;
        }
        assert!(is_live(&env, op), "run archived {op}");
        assert!(out.stderr.contains(op), "{op} not reported: {}", out.stderr);
    }

    // An explicit recover: still nothing of theirs is touched.
    beat_all();
    let out = env.run(&["recover"]);
    out.expect_code(0);
    for s in &sentinels {
        assert!(intact(s), "{} was deleted: {}", s.display(), out.stderr);
    }
    assert!(running(vpid), "the bystander was signalled");
    for &pid in &group.members {
        assert!(running(pid), "a member of the test's group was signalled");
    }
    for op in [
        "h1-original-fresh",
        "h3-other-namespace",
        "h4-world-writable",
    ] {
        assert!(is_live(&env, op), "recover touched {op}");
    }
    assert!(
        out.stderr
            .contains("left operation h4-world-writable alone"),
        "{}",
        out.stderr
    );
    if foreign_owner {
        assert!(
            is_live(&env, "h5-other-owner"),
            "recover touched h5-other-owner"
        );
        assert!(
            out.stderr.contains("left operation h5-other-owner alone"),
            "{}",
            out.stderr
        );
    }

    victim.kill().expect("kill the test's own process");
    victim.wait().expect("reap");
    for pid in group.members {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}
