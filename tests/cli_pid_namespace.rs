//! A live run in another PID namespace (a container sharing this machine's host name,
//! boot id and a ledger volume) is judged by its heartbeat, not by pids that mean
//! nothing here: `recover` and `run` outside leave it alone and it completes normally.

mod cli_common;

use std::process::{Command, Stdio};

use cli_common::{BIN, Env, WATCHDOG, wait_bounded, wait_until};

/// Whether this machine lets us start a process in a new PID namespace with its own /proc.
fn namespaces_permitted() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare --pid is not permitted here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn a_live_run_in_another_pid_namespace_is_not_taken_for_dead() {
    if let Err(why) = namespaces_permitted() {
        eprintln!("skipped: {why}");
        return;
    }
    let env = Env::new();
    let inner_temp = env.write("inner.tmp", "in use");
    std::fs::create_dir_all(&env.ledger).expect("ledger dir");
    // Inside the namespace: a run whose worker registers a temp file, says so, and waits
    // for the test to release it. The run's exit status is written for the test to read.
    let worker = format!(
        "\"$0\" temp add \"$D/inner.tmp\" && : > \"$D/registered\" && while [ ! -e \"$D/release\" ]; do sleep 0.05; done; : {}",
        env.marker
    );
    let script = format!(
        "\"$0\" --ledger \"$1\" run -- sh -c '{worker}' \"$0\"; echo $? > \"$D/inner-exit\"; : {}",
        env.marker
    );
    let mut inner = Command::new("unshare");
    inner
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script, BIN])
        .arg(&env.ledger)
        .env("D", env.dir.path())
        .env_remove("TOM_LEDGER_DIR")
        .env_remove("TOM_LEDGER_OPERATION")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut inner = inner.spawn().expect("start the run in a PID namespace");
    wait_until("the namespaced run to register its temp file", || {
        env.path("registered").exists()
    });

    let op = {
        let out = env.run(&["--json", "ls"]);
        out.expect_code(0);
        let ops = out.json();
        assert_eq!(ops.len(), 1, "{ops:?}");
        ops[0]["operation"].as_str().expect("id").to_string()
    };
    let live = env.ledger.join(format!("{op}.operation.json"));

    let dry = env.run(&["recover", "--dry-run"]);
    dry.expect_code(0);
    assert_eq!(dry.stdout, "nothing to recover\n");
    let out = env.run(&["recover"]);
    out.expect_code(0);
    assert!(
        inner_temp.exists(),
        "recover deleted a live run's temp file"
    );
    assert!(live.exists(), "recover archived a live run: {}", out.stdout);
    let out = env.run(&["run", "--", "true"]);
    out.expect_code(0);
    assert!(inner_temp.exists(), "run deleted a live run's temp file");
    assert!(live.exists(), "run archived a live run: {}", out.stderr);

    std::fs::write(env.path("release"), "").expect("release the worker");
    let status = wait_bounded(&mut inner, WATCHDOG);
    let mut stderr = String::new();
    if let Some(mut e) = inner.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "{status:?}: {stderr}");
    let code = std::fs::read_to_string(env.path("inner-exit")).expect("inner exit status");
    assert_eq!(
        code.trim(),
        "0",
        "the namespaced run did not complete: {stderr}"
    );
    let out = env.run(&["--json", "status", &op]);
    out.expect_code(0);
    assert_eq!(out.json()[0]["state"], "completed", "{}", out.stdout);
    env.assert_no_leftovers();
}
