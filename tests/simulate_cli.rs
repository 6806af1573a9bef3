//! `tom-ledger simulate` as a user runs it: listing, running with the table or JSON,
//! custom scenarios from TOML (a wrong expectation fails the run with expected versus
//! seen; a bad file exits 2 with file:line:column), backends this build lacks, the
//! server and etcd backends started and stopped by the command.

mod cli_common;

use cli_common::Env;

/// A custom scenario: the bridge is killed in its call.
const CRASH: &str = r#"
[[scenario]]
name = "bridge_killed"
description = "the bridge is killed in its call"

[[scenario.call]]
name = "cli-main"
by = "cli"
temps = ["cli.tmp"]
call = [{ name = "bridge-process", by = "bridge", temps = ["bridge.tmp"] }]

[[scenario.fault]]
participant = "bridge"
kind = "crash"
at = "started:bridge-process"

[scenario.expect]
state = "failed"
saw_failed = ["cli"]
order = ["fault", "failed:cli"]
temps_gone = ["cli.tmp", "bridge.tmp"]
exit = { cli = 1, bridge = "SIGKILL" }
"#;

/// Run `simulate` with its scratch directories in the test's own directory (`TMPDIR`);
/// none is left afterwards.
fn sim(env: &Env, mut cmd: std::process::Command) -> cli_common::Out {
    cmd.env("TMPDIR", env.dir.path());
    let out = cli_common::run(cmd);
    let left: Vec<_> = std::fs::read_dir(env.dir.path())
        .expect("read test dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("tom-ledger-sim-")
        })
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    out
}

#[test]
fn list_names_the_fifteen_scenarios() {
    let env = Env::new();
    let out = env.bare(&["simulate", "--list"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "happy_path",
            "cli_crash_during_init",
            "cli_crash_during_bridge",
            "cli_crash_during_copilot",
            "bridge_crash_during_init",
            "bridge_crash_during_copilot",
            "bridge_hang",
            "copilot_timeout",
            "copilot_error",
            "user_abort_during_bridge",
            "user_abort_during_copilot",
            "direct_call_no_supervisor",
            "parallel_calls_from_bridge",
            "deeply_nested_chain",
            "crash_during_cleanup",
        ]
    );
}

#[test]
fn a_run_prints_the_table_and_exits_0_when_all_pass() {
    let env = Env::new();
    let out = sim(
        &env,
        env.bare(&["simulate", "happy_path", "cli_crash_during_bridge"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("SCENARIO"), "{}", out.stdout);
    assert!(lines[1].starts_with("happy_path ") && lines[1].contains(" pass "));
    assert!(lines[2].starts_with("cli_crash_during_bridge ") && lines[2].contains(" ms"));
    assert_eq!(lines[3], "2 of 2 passed");
}

#[test]
fn json_prints_one_object_per_scenario() {
    let env = Env::new();
    let out = sim(&env, env.bare(&["--json", "simulate", "copilot_error"]));
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(objects.len(), 1);
    let o = &objects[0];
    assert_eq!(o["scenario"], "copilot_error");
    assert_eq!(o["passed"], true);
    assert_eq!(o["state"], "failed");
    assert_eq!(o["exits"]["vscode"], "1");
    assert!(o["detection_ms"].is_number());
    assert!(o["reason"].as_str().unwrap_or("").contains("rate limited"));
}

#[test]
fn a_custom_scenario_from_toml_runs_and_passes() {
    let env = Env::new();
    let file = env.write("scenarios.toml", CRASH);
    let out = sim(
        &env,
        env.bare(&["simulate", "--file", file.to_str().expect("utf-8")]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    assert!(out.stdout.contains("bridge_killed"), "{}", out.stdout);
}

#[test]
fn a_wrong_expectation_fails_the_run_with_expected_versus_seen() {
    let env = Env::new();
    let wrong = CRASH
        .replace(r#"state = "failed""#, r#"state = "completed""#)
        .replace(
            r#"temps_gone = ["cli.tmp", "bridge.tmp"]"#,
            r#"temps_kept = ["bridge.tmp"]"#,
        )
        .replace("cli = 1,", "cli = 0,");
    let file = env.write("scenarios.toml", &wrong);
    let out = sim(
        &env,
        env.bare(&["simulate", "--file", file.to_str().expect("utf-8")]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("bridge_killed  FAIL"), "{}", out.stdout);
    for line in [
        "  final state: expected completed, saw failed (",
        "  temp `bridge.tmp`: expected kept, saw it gone\n",
        "  exit of `cli`: expected 0, saw 1\n",
    ] {
        assert!(
            out.stdout.contains(line),
            "missing `{line}` in:\n{}",
            out.stdout
        );
    }
}

/// `simulate --file` with `text` exits 2 with exactly `message` on stderr.
fn bad_file(text: &str, message: &str) {
    let env = Env::new();
    let file = env.write("bad.toml", text);
    let path = file.to_str().expect("utf-8");
    let out = sim(&env, env.bare(&["simulate", "--file", path]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr.trim_end(),
        format!("tom-ledger: error: {path}:{message}")
    );
}

#[test]
fn a_bad_scenario_file_exits_2_naming_file_line_and_column() {
    // Syntax.
    bad_file(
        "[[scenario]]\nname = \"x\"\nkind = = 1\n",
        "3:8: extra `=`, expected nothing",
    );
}

#[test]
fn unknown_keys_kinds_points_and_names_are_refused_where_they_are() {
    let fault = |line: &str| CRASH.replace(r#"kind = "crash""#, line);
    bad_file(
        &CRASH.replace("description =", "descripton ="),
        "4:1: unknown field `descripton`, expected one of `name`, `description`, `call`, `fault`, `expect`",
    );
    bad_file(
        &fault(r#"kind = "explode""#),
        "14:8: unknown fault kind `explode` (crash, hang, abort, error, timeout)",
    );
    bad_file(
        &CRASH.replace(
            r#"at = "started:bridge-process""#,
            r#"at = "during:bridge""#,
        ),
        "15:6: `during:bridge` is not a point (joined:PARTICIPANT, started:CALL, ended:CALL, cleanup:CALL)",
    );
    bad_file(
        &CRASH.replace(r#"participant = "bridge""#, r#"participant = "brigde""#),
        "3:8: scenario `bridge_killed`: fault names unknown participant `brigde`",
    );
    bad_file(
        &CRASH.replace(r#"bridge = "SIGKILL""#, r#"bridge = "SIGKIL""#),
        "22:28: `SIGKIL` is neither an exit code nor a signal name like \"SIGKILL\"",
    );
}

#[test]
fn unknown_scenarios_and_unavailable_backends_exit_2_and_start_nothing() {
    let env = Env::new();
    for (args, message) in [
        (
            &["simulate", "happy_pth"][..],
            "unknown scenario `happy_pth` (`tom-ledger simulate --list` names them)",
        ),
        #[cfg(not(feature = "etcd"))]
        (
            &["simulate", "--all", "--backend", "etcd"][..],
            "backend `etcd` is not available in this build",
        ),
        (
            &["--etcd", "http://127.0.0.1:1", "simulate", "--all"][..],
            "--etcd names the cluster of `--backend etcd`, not of `--backend file`",
        ),
        (
            &[
                "--etcd",
                "http://127.0.0.1:1",
                "simulate",
                "--all",
                "--backend",
                "server",
            ][..],
            "--etcd names the cluster of `--backend etcd`, not of `--backend server`",
        ),
        (
            &["simulate", "--all", "--backend", "floppy"][..],
            "backend: `floppy` is not one of file, server, etcd",
        ),
        (
            &["simulate"][..],
            "name the scenarios to run, or use --all (--list names them)",
        ),
    ] {
        let out = sim(&env, env.bare(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert_eq!(
            out.stderr.trim_end(),
            format!("tom-ledger: error: {message}")
        );
    }
}

#[test]
fn ctrl_c_ends_the_run_with_130_and_leaves_no_process_and_no_scratch() {
    interrupt_bridge_hang(&[], 2);
}

#[test]
fn ctrl_c_on_the_server_backend_stops_the_server_too() {
    // The server, the cli and the bridge carry the scratch path.
    interrupt_bridge_hang(&["--backend", "server"], 3);
}

#[cfg(feature = "etcd")]
#[test]
fn ctrl_c_on_the_etcd_backend_stops_the_member_too() {
    interrupt_bridge_hang(&["--backend", "etcd"], 3);
}

/// SIGINT to `simulate bridge_hang` once `running` of its processes run: it exits 130,
/// and no process of it (participants, a server, an etcd member) nor scratch is left.
fn interrupt_bridge_hang(backend: &[&str], running: usize) {
    let env = Env::new();
    let mut args = vec!["simulate", "bridge_hang"];
    args.extend_from_slice(backend);
    let mut cmd = env.bare(&args);
    cmd.env("TMPDIR", env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start simulate");
    // Its processes carry the scratch path, inside the test's directory (participants on
    // etcd: their key prefix, named after the scratch directory).
    let scratch_marker = env.dir.path().to_str().expect("utf-8").to_string();
    let prefix_marker = format!("tom-ledger-sim-{}-", child.id());
    let processes = || {
        let mut pids = cli_common::processes_with(&scratch_marker);
        pids.extend(cli_common::processes_with(&prefix_marker));
        pids.sort_unstable();
        pids.dedup();
        pids
    };
    cli_common::wait_until("the scenario's participants to run", || {
        processes().len() >= running
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = cli_common::wait_bounded(&mut child, cli_common::WATCHDOG);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "tom-ledger: error: interrupted by SIGINT during scenario `bridge_hang` (0 of 1 run)"
    );
    cli_common::wait_until("the participants to be gone", || processes().is_empty());
    let left: Vec<_> = std::fs::read_dir(env.dir.path())
        .expect("read test dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("tom-ledger-sim-")
        })
        .collect();
    assert!(left.is_empty(), "scratch left behind");
}

#[test]
fn the_server_backend_starts_a_server_per_scenario_and_stops_it() {
    let env = Env::new();
    let out = sim(
        &env,
        env.bare(&[
            "--json",
            "simulate",
            "bridge_crash_during_init",
            "--backend",
            "server",
        ]),
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let o: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON line");
    assert_eq!(o["passed"], true);
    let ledger = o["ledger"].as_str().unwrap_or("");
    assert!(ledger.starts_with("server http://127.0.0.1:"), "{ledger}");
    // The server carried the scratch path in its arguments: gone with the participants.
    let marker = env.dir.path().to_str().expect("utf-8").to_string();
    assert!(cli_common::processes_with(&marker).is_empty());
}

#[cfg(feature = "etcd")]
#[test]
fn the_etcd_backend_without_a_cluster_starts_a_member_and_removes_it() {
    let env = Env::new();
    let out = sim(
        &env,
        env.bare(&[
            "--json",
            "simulate",
            "happy_path",
            "copilot_error",
            "--backend",
            "etcd",
        ]),
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(objects.len(), 2);
    // One member for the run, each scenario under a key prefix of its own.
    let ledgers: Vec<&str> = objects
        .iter()
        .map(|o| o["ledger"].as_str().unwrap_or(""))
        .collect();
    let endpoint = |l: &str| l.split(' ').nth(1).unwrap_or("").to_string();
    assert!(
        ledgers[0].starts_with("etcd http://127.0.0.1:"),
        "{ledgers:?}"
    );
    assert_eq!(endpoint(ledgers[0]), endpoint(ledgers[1]));
    assert_ne!(ledgers[0], ledgers[1]);
    let marker = env.dir.path().to_str().expect("utf-8").to_string();
    assert!(
        cli_common::processes_with(&marker).is_empty(),
        "etcd left running"
    );
    for ledger in ledgers {
        // Participants carry their scenario's key prefix.
        let prefix = ledger.rsplit(' ').next().unwrap_or("");
        assert!(cli_common::processes_with(prefix).is_empty(), "{prefix}");
    }
}

#[cfg(feature = "etcd")]
#[test]
fn the_etcd_backend_without_etcd_installed_exits_2_and_starts_nothing() {
    let env = Env::new();
    let mut cmd = env.bare(&["simulate", "happy_path", "--backend", "etcd"]);
    // A PATH without etcd on it.
    cmd.env("PATH", env.dir.path())
        .env_remove("TOM_LEDGER_ETCD");
    let out = sim(&env, cmd);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr.trim_end(),
        "tom-ledger: error: backend `etcd` needs the program `etcd`, which is not installed (not found in PATH)"
    );
}

#[cfg(feature = "etcd")]
#[test]
fn the_etcd_backend_refuses_a_bad_endpoint_list_before_anything_starts() {
    let env = Env::new();
    let out = sim(
        &env,
        env.bare(&[
            "--etcd",
            "ftp://nowhere",
            "simulate",
            "happy_path",
            "--backend",
            "etcd",
        ]),
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with("tom-ledger: error: "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ftp://nowhere"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn a_participant_refuses_a_ledger_it_cannot_reach_and_joins_nothing() {
    let env = Env::new();
    let ledger = env.path("ledger");
    let ledger = ledger.to_str().expect("utf-8");
    let timing = [
        "simulate-participant",
        "--heartbeat-ms",
        "100",
        "--stale-ms",
        "3000",
        "--cleanup-wait-ms",
        "0",
    ];
    for (place, extra, message) in [
        (
            &["--server", "http://127.0.0.1:1"][..],
            &[][..],
            "simulate-participant --server needs --token-file",
        ),
        (
            &["--ledger", ledger][..],
            &["--etcd-prefix", "/sim/"][..],
            "--etcd-prefix goes with --etcd",
        ),
        (
            &[][..],
            &[][..],
            "simulate-participant needs one of --ledger DIR, --server URL, --etcd URLS",
        ),
    ] {
        let mut args: Vec<&str> = place.to_vec();
        args.extend(["--participant", "cli"]);
        args.extend(timing);
        args.extend(extra);
        let out = cli_common::run(env.bare(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        assert_eq!(
            out.stderr.trim_end(),
            format!("tom-ledger: error: {message}")
        );
    }
    assert!(!env.path("ledger").exists(), "nothing created");
}
