//! `tom-ledger --etcd`: every command on an etcd ledger, workers joining it through
//! `TOM_LEDGER_ETCD`, and bad endpoints refused in one line.
#![cfg(feature = "etcd")]

mod cli_common;
mod etcd_common;

use cli_common::Env;
use etcd_common::Etcd;

/// A run on etcd: the nested `temp` and `exec` join the same operation through the
/// variables, the temp resource is deleted when the worker fails, nothing is written to
/// a ledger directory, and `ls`, `status` and `log` read the operation back from etcd.
#[test]
fn run_on_etcd_and_workers_join_through_the_environment() {
    let etcd = Etcd::single();
    let env = Env::new();
    let list = etcd.endpoint_list();
    let script = "tom-ledger temp add $D/nested.tmp && touch $D/nested.tmp \
        && tom-ledger exec -- sh -c 'echo \"$TOM_LEDGER_ETCD $TOM_LEDGER_ETCD_PREFIX\" > $D/inner.etcd' $0; exit 5";
    let out = cli_common::run({
        let mut c = env.bare(&[
            "--etcd",
            &list,
            "run",
            "--",
            "sh",
            "-c",
            script,
            &env.marker,
        ]);
        c.current_dir(env.dir.path());
        c
    });
    out.expect_code(1);
    let inner = std::fs::read_to_string(env.path("inner.etcd")).unwrap();
    assert_eq!(inner.trim(), format!("{list} /tom-ledger/"));
    assert!(
        !env.path("nested.tmp").exists(),
        "the nested temp resource is deleted on failure"
    );
    assert!(
        !env.path("_ai").exists() && !env.ledger.exists(),
        "an etcd run writes no ledger directory"
    );
    let ls = cli_common::run(env.bare(&["--etcd", &list, "--json", "ls"]));
    ls.expect_code(0);
    let listed = ls.json();
    assert_eq!(listed.len(), 1, "{}", ls.stdout);
    assert_eq!(listed[0]["state"], "failed", "{}", ls.stdout);
    let op = listed[0]["operation"]
        .as_str()
        .expect("an operation id")
        .to_string();
    let log = cli_common::run(env.bare(&["--etcd", &list, "log", &op]));
    log.expect_code(0);
    assert!(log.stdout.contains("CALL_COMPLETED"), "{}", log.stdout);
    // The variable names the same ledger as the flag.
    let mut status = env.bare(&["--json", "status", &op]);
    status.env("TOM_LEDGER_ETCD", &list);
    let status = cli_common::run(status);
    status.expect_code(0);
    assert!(status.stdout.contains(&op), "{}", status.stdout);
    env.assert_no_leftovers();
}

/// Endpoints that are not host:port are refused in one line naming the bad value,
/// before anything connects; `--etcd` and `--ledger` together are refused.
#[test]
fn bad_endpoints_are_refused_in_one_line() {
    let env = Env::new();
    for (bad, reason) in [
        ("localhost", "has no port"),
        ("h:0", "port from 1 to 65535"),
        ("https://h:1", "only http://"),
        (",", "at least one"),
    ] {
        let out = cli_common::run(env.bare(&["--etcd", bad, "ls"]));
        assert_ne!(out.code(), 0, "{bad}: {}", out.stdout);
        let line = out.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains(bad) && line.contains(reason), "{line}");
    }
    let mut bad_env = env.bare(&["ls"]);
    bad_env.env("TOM_LEDGER_ETCD", "nowhere");
    let out = cli_common::run(bad_env);
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("`nowhere`"), "{}", out.stderr);
    let both = cli_common::run(env.bare(&["--etcd", "h:1", "--ledger", "x", "ls"]));
    assert_eq!(both.code(), 2, "{}", both.stderr);
    assert!(!env.path("x").exists());
}
