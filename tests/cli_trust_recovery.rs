//! Recovery acts only on proof: planted or foreign operation files make `run` and
//! `recover` delete nothing and signal nothing that is not provably theirs. Every path
//! named by a planted file is a sentinel inside the test's directory; every process is one
//! the test started itself.

mod cli_common;
mod trust_common;

use std::path::{Path, PathBuf};
use std::process::Child;

use cli_common::{Env, WATCHDOG};
use serde_json::json;
use trust_common::*;

// ----- case 3 -----

#[test]
fn a_planted_operation_makes_run_delete_nothing() {
    let env = Env::new();
    let precious = sentinel(&env, "precious-dir");
    let op = "planted-no-participants";
    plant(
        &env,
        op,
        operation(
            op,
            &an_hour_ago(),
            json!({}),
            json!([]),
            json!([temp(&precious, None, 1)]),
        ),
    );
    let out = env.run(&["run", "--", "true"]);
    out.expect_code(0);
    assert!(
        intact(&precious),
        "run deleted a path named by a planted file"
    );
    assert!(is_live(&env, op) && !is_archived(&env, op));
    let reported: Vec<&str> = out.stderr.lines().filter(|l| l.contains(op)).collect();
    assert_eq!(reported.len(), 1, "{}", out.stderr);
    assert!(
        reported[0].contains("tom-ledger recover") && reported[0].contains("no participant"),
        "{}",
        reported[0]
    );
}

#[test]
fn a_dead_leaders_group_number_never_leads_to_signalling_its_members() {
    let env = Env::new();
    let group = leaderless_group(&env);
    let ghost = "ghost";
    let op = "planted-dead-leader";
    let frames = json!([
        frame(
            ghost,
            1,
            process(group.pgid, group.pgid, group.leader_ticks, None)
        ),
        frame(ghost, 2, process(i32::MAX - 7, 1, 1, None)),
    ]);
    plant(
        &env,
        op,
        operation(
            op,
            &an_hour_ago(),
            json!({ ghost: participant(i64::from(i32::MAX - 3), 1, &an_hour_ago(), |_| {}) }),
            frames,
            json!([]),
        ),
    );
    let dry = env.run(&["--json", "recover", "--dry-run"]);
    dry.expect_code(0);
    let plans = dry.json();
    assert_eq!(plans.len(), 1, "{plans:#?}");
    assert_eq!(plans[0]["signal"], json!([]), "{plans:#?}");
    let out = env.run(&["recover"]);
    out.expect_code(0);
    for &pid in &group.members {
        assert!(
            running(pid),
            "member {pid} of a leaderless group was signalled"
        );
    }
    assert!(
        out.stderr.contains("do not prove they belong"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("process group 1 "), "{}", out.stderr);
}

/// A cgroup v2 directory the test made outside tom-ledger's subtree, with a process in it.
struct ForeignCgroup {
    path: PathBuf,
    child: Child,
}

impl Drop for ForeignCgroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = std::time::Instant::now() + WATCHDOG;
        while std::fs::remove_dir(&self.path).is_err()
            && self.path.exists()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// The cgroup v2 directory this process runs in, if it is writable.
fn own_cgroup_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .to_string();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(|m| Path::new(m).join(own.trim_start_matches('/')))
        .find(|dir| {
            let probe = dir.join(format!("tdl-probe-{}", std::process::id()));
            let ok = std::fs::create_dir(&probe).is_ok() && probe.join("cgroup.procs").exists();
            let _ = std::fs::remove_dir(&probe);
            ok
        })
}

#[test]
fn a_cgroup_outside_our_subtree_is_never_killed_nor_removed() {
    let Some(dir) = own_cgroup_dir() else {
        eprintln!("skipped: no writable cgroup v2 hierarchy here");
        return;
    };
    let env = Env::new();
    let path = dir.join(format!("tdl-foreign-{}", env.marker));
    // The bystander first: once the cgroup exists, its guard owns it.
    let child = bystander(&env);
    std::fs::create_dir(&path).expect("foreign cgroup");
    let foreign = ForeignCgroup { path, child };
    let pid = foreign.child.id() as i32;
    std::fs::write(foreign.path.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    // Named like ours but reached through `..`: refused as well.
    let sneaky = dir
        .join("tom-ledger-1-1-1")
        .join("..")
        .join(foreign.path.file_name().expect("name"));
    let ghost = "ghost";
    let op = "planted-foreign-cgroup";
    let dead_pid = i32::MAX - 11;
    plant(
        &env,
        op,
        operation(
            op,
            &an_hour_ago(),
            json!({ ghost: participant(i64::from(i32::MAX - 3), 1, &an_hour_ago(), |_| {}) }),
            json!([
                frame(
                    ghost,
                    1,
                    process(dead_pid, dead_pid, 1, foreign.path.to_str())
                ),
                frame(ghost, 2, process(dead_pid, dead_pid, 1, sneaky.to_str())),
            ]),
            json!([]),
        ),
    );
    let dry = env.run(&["recover", "--dry-run"]);
    dry.expect_code(0);
    assert!(!dry.stdout.contains("would signal"), "{}", dry.stdout);
    assert_eq!(
        dry.stdout.matches("would not touch: cgroup").count(),
        2,
        "{}",
        dry.stdout
    );
    let out = env.run(&["recover"]);
    out.expect_code(0);
    assert!(running(pid), "a process of a foreign cgroup was killed");
    assert!(
        foreign.path.join("cgroup.procs").exists(),
        "a foreign cgroup was removed"
    );
    assert!(out.stderr.contains("ignored"), "{}", out.stderr);
    assert!(
        is_archived(&env, op),
        "the operation itself is ours to archive"
    );
}

// ----- case 7 -----

#[test]
fn a_live_operation_of_the_original_is_judged_by_its_heartbeat() {
    let env = Env::new();
    let precious = sentinel(&env, "original-temp");
    let mut owner = bystander(&env);
    let op = "original-live";
    let mut data = json!({
        "operationId": op,
        "initiatorId": "cli",
        "startTime": an_hour_ago(),
        "operationState": "running",
        "aborted": false,
        "lastHeartbeat": stamp(now() - chrono::Duration::seconds(1)),
        "callFrames": [],
        "tempResources": [temp(&precious, None, i64::from(owner.id()))],
    });
    let file = plant(&env, op, data.clone());
    for args in [&["run", "--", "true"][..], &["recover"][..]] {
        // A heartbeat one second old, whatever the load on this machine.
        data["lastHeartbeat"] = json!(stamp(now() - chrono::Duration::seconds(1)));
        std::fs::write(&file, serde_json::to_string_pretty(&data).expect("json")).expect("rewrite");
        let out = env.run(args);
        out.expect_code(0);
        assert!(
            intact(&precious),
            "{args:?} recovered a live operation of the original"
        );
        assert!(is_live(&env, op), "{args:?}: {}", out.stderr);
    }
    // Its heartbeat goes stale: only an explicit recover cleans it.
    data["lastHeartbeat"] = json!(an_hour_ago());
    std::fs::write(&file, serde_json::to_string_pretty(&data).expect("json")).expect("rewrite");
    let out = env.run(&["run", "--", "true"]);
    out.expect_code(0);
    assert!(intact(&precious) && is_live(&env, op), "{}", out.stderr);
    assert!(out.stderr.contains(op), "{}", out.stderr);
    let dry = env.run(&["recover", "--dry-run"]);
    assert!(
        dry.stdout
            .contains(&format!("would delete {}", precious.display())),
        "{}",
        dry.stdout
    );
    let out = env.run(&["recover"]);
    out.expect_code(0);
    assert!(!precious.exists(), "{}", out.stdout);
    assert!(is_archived(&env, op));
    owner.kill().expect("kill the test's own process");
    owner.wait().expect("reap");
}
