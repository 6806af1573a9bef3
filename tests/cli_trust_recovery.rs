//! Recovery acts only on proof: planted or foreign operation files make `run` and
//! `recover` delete nothing and signal nothing that is not provably theirs. Every path
//! named by a planted file is a sentinel inside the test's directory; every process is one
//! the test started itself.

mod cli_common;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cli_common::{Env, Live, WATCHDOG, processes_with, wait_bounded, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn an_hour_ago() -> String {
    stamp(now() - chrono::Duration::hours(1))
}

/// A participant record; `tweak` makes its identity wrong in one way or another.
fn participant(pid: i64, ticks: u64, heartbeat: &str, tweak: impl FnOnce(&mut Value)) -> Value {
    let mut p = json!({
        "pid": pid,
        "startTicks": ticks,
        "host": tom_dist_ledger::process::hostname(),
        "bootId": tom_dist_ledger::process::boot_id(),
        "pidNamespace": tom_dist_ledger::process::pid_namespace(),
        "uid": tom_dist_ledger::process::user_id(),
        "epoch": 1,
        "lastHeartbeat": heartbeat,
        "joinedAt": heartbeat,
        "state": "active",
    });
    tweak(&mut p);
    p
}

/// A call frame of `participant` recording a worker process.
fn frame(participant: &str, n: u32, process: Value) -> Value {
    json!({
        "participantId": participant,
        "callId": format!("call_{participant}_{n}_0000"),
        "pid": 9_999_999,
        "startTime": an_hour_ago(),
        "lastHeartbeat": an_hour_ago(),
        "state": "active",
        "failOnCrash": true,
        "process": process,
    })
}

fn process(pid: i32, pgid: i32, ticks: u64, cgroup: Option<&str>) -> Value {
    let mut p = json!({
        "pid": pid,
        "pgid": pgid,
        "startTicks": ticks,
        "bootId": tom_dist_ledger::process::boot_id(),
        "pidNamespace": tom_dist_ledger::process::pid_namespace(),
        "command": ["planted"],
    });
    if let Some(cg) = cgroup {
        p["cgroup"] = json!(cg);
    }
    p
}

fn temp(path: &Path, owner_id: Option<&str>, owner_pid: i64) -> Value {
    let mut t = json!({
        "path": path.to_str().expect("utf-8 path"),
        "owner": owner_pid,
        "registeredAt": an_hour_ago(),
    });
    if let Some(o) = owner_id {
        t["ownerId"] = json!(o);
    }
    t
}

/// Writes `{op}.operation.json` into the ledger directory as a planted file (0600).
fn plant(env: &Env, op: &str, data: Value) -> PathBuf {
    std::fs::create_dir_all(&env.ledger).expect("ledger dir");
    std::fs::set_permissions(&env.ledger, std::fs::Permissions::from_mode(0o700))
        .expect("ledger dir mode");
    let path = env.ledger.join(format!("{op}.operation.json"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("plant operation file");
    f.write_all(
        serde_json::to_string_pretty(&data)
            .expect("json")
            .as_bytes(),
    )
    .expect("write planted file");
    path
}

fn operation(op: &str, heartbeat: &str, participants: Value, frames: Value, temps: Value) -> Value {
    json!({
        "operationId": op,
        "initiatorId": "ghost",
        "startTime": an_hour_ago(),
        "operationState": "running",
        "aborted": false,
        "lastHeartbeat": heartbeat,
        "callFrames": frames,
        "tempResources": temps,
        "participants": participants,
    })
}

/// A sentinel file and a sentinel directory (with content) in the test directory.
fn sentinel(env: &Env, name: &str) -> PathBuf {
    let dir = env.path(name);
    std::fs::create_dir(&dir).expect("sentinel dir");
    std::fs::write(dir.join("precious"), name).expect("sentinel content");
    dir
}

fn intact(path: &Path) -> bool {
    path.join("precious").is_file()
}

fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit(')').next().expect("stat fields");
    after
        .split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("ticks")
}

fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// A process group started by the test whose leader has exited: its members (started
/// after it, in its group, without any operation in their environment) stay.
struct LeaderlessGroup {
    pgid: i32,
    leader_ticks: u64,
    members: Vec<i32>,
}

fn leaderless_group(env: &Env) -> LeaderlessGroup {
    let mut cmd = Command::new(FORK_TREE);
    cmd.args(["2", "--exit", "--marker", &env.marker])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start fork tree");
    let pgid = child.id() as i32;
    let leader_ticks = start_ticks(pgid);
    let stdout = child.stdout.take().expect("stdout");
    let mut members = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
        if let Some(pid) = line.strip_prefix("pid ") {
            members.push(pid.trim().parse().expect("pid"));
        }
        if line == "ready" {
            break;
        }
    }
    let status = wait_bounded(&mut child, WATCHDOG);
    assert!(status.success(), "{status:?}");
    assert_eq!(members.len(), 2);
    LeaderlessGroup {
        pgid,
        leader_ticks,
        members,
    }
}

/// A hanging process of the test, in its own group.
fn bystander(env: &Env) -> Child {
    let mut cmd = Command::new(HANG);
    cmd.args(["--marker", &env.marker])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start bystander");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut out, &mut line).expect("ready line");
    assert_eq!(line.trim(), "ready");
    child
}

fn is_live(env: &Env, op: &str) -> bool {
    env.ledger.join(format!("{op}.operation.json")).exists()
}

fn is_archived(env: &Env, op: &str) -> bool {
    env.ledger.join("backup").join(op).exists()
}

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
    std::fs::create_dir(&path).expect("foreign cgroup");
    let child = bystander(&env);
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

// ----- the hostile ledger -----

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
