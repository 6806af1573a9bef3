//! Planted operation files and the test's own processes for the trust tests of recovery:
//! every path a planted file names is a sentinel in the test's directory, every process is
//! one the test started itself.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::cli_common::{Env, WATCHDOG, wait_bounded};

pub const FORK_TREE: &str = env!("CARGO_BIN_EXE_worker-fork-tree");
pub const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn an_hour_ago() -> String {
    stamp(now() - chrono::Duration::hours(1))
}

/// A participant record; `tweak` makes its identity wrong in one way or another.
pub fn participant(pid: i64, ticks: u64, heartbeat: &str, tweak: impl FnOnce(&mut Value)) -> Value {
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
pub fn frame(participant: &str, n: u32, process: Value) -> Value {
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

pub fn process(pid: i32, pgid: i32, ticks: u64, cgroup: Option<&str>) -> Value {
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

pub fn temp(path: &Path, owner_id: Option<&str>, owner_pid: i64) -> Value {
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
pub fn plant(env: &Env, op: &str, data: Value) -> PathBuf {
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

pub fn operation(
    op: &str,
    heartbeat: &str,
    participants: Value,
    frames: Value,
    temps: Value,
) -> Value {
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
pub fn sentinel(env: &Env, name: &str) -> PathBuf {
    let dir = env.path(name);
    std::fs::create_dir(&dir).expect("sentinel dir");
    std::fs::write(dir.join("precious"), name).expect("sentinel content");
    dir
}

pub fn intact(path: &Path) -> bool {
    path.join("precious").is_file()
}

pub fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit(')').next().expect("stat fields");
    after
        .split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("ticks")
}

pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// A process group started by the test whose leader has exited: its members (started
/// after it, in its group, without any operation in their environment) stay.
pub struct LeaderlessGroup {
    pub pgid: i32,
    pub leader_ticks: u64,
    pub members: Vec<i32>,
}

pub fn leaderless_group(env: &Env) -> LeaderlessGroup {
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
pub fn bystander(env: &Env) -> Child {
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

pub fn is_live(env: &Env, op: &str) -> bool {
    env.ledger.join(format!("{op}.operation.json")).exists()
}

pub fn is_archived(env: &Env, op: &str) -> bool {
    env.ledger.join("backup").join(op).exists()
}
