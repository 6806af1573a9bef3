//! Bad input: one line on stderr naming the file, line or value, exit status 2, and
//! nothing started or written (the ledger directory is compared before and after).

mod cli_common;

use cli_common::{Env, Out, assert_same};

/// Run a command that must be refused; returns its one error line.
fn refused(env: &Env, args: &[&str]) -> String {
    let before = env.ledger_snapshot();
    let out = env.run(args);
    refused_out(&out, args);
    assert_same(
        &before,
        &env.ledger_snapshot(),
        &format!("{args:?} changed the ledger"),
    );
    env.assert_no_leftovers();
    out.stderr.trim_end().to_string()
}

fn refused_out(out: &Out, args: &[&str]) {
    assert_eq!(
        out.code(),
        2,
        "{args:?}: stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed on stdout: {:?}",
        out.stdout
    );
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "{args:?}: not one line: {:?}",
        out.stderr
    );
    assert!(
        out.stderr.starts_with("tom-ledger: error: "),
        "{:?}",
        out.stderr
    );
}

/// An existing ledger with one archived operation in it, so "nothing written" means
/// something.
fn env_with_ledger() -> Env {
    let env = Env::new();
    env.run(&["run", "--", "true"]).expect_code(0);
    env
}

#[test]
fn plan_errors_name_the_file_and_line() {
    let env = env_with_ledger();
    let m = &env.marker;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "syntax.toml",
            "[[worker]\nname = \"a\"\n".into(),
            "syntax.toml:1:",
        ),
        (
            "unknown-key.toml",
            format!(
                "[[worker]]\nname = \"a\"\ncmd = [\"sh\", \"-c\", \"true\", \"{m}\"]\ntimeout_s = 3\n"
            ),
            "unknown-key.toml:4:1: unknown field `timeout_s`",
        ),
        (
            "dup.toml",
            format!(
                "[[worker]]\nname = \"a\"\ncmd = [\"true\", \"{m}\"]\n[[worker]]\nname = \"a\"\ncmd = [\"true\"]\n"
            ),
            "dup.toml:5:8: duplicate worker name `a`",
        ),
        (
            "cycle.toml",
            format!(
                "[[worker]]\nname = \"a\"\ncmd = [\"true\", \"{m}\"]\nafter = [\"b\"]\n\
                 [[worker]]\nname = \"b\"\ncmd = [\"true\"]\nafter = [\"a\"]\n"
            ),
            "cycle.toml:2:8: cycle in `after`: a -> b -> a",
        ),
        (
            "after.toml",
            format!("[[worker]]\nname = \"a\"\ncmd = [\"true\", \"{m}\"]\nafter = [\"nobody\"]\n"),
            "after.toml:4:10: worker `a`: unknown worker `nobody` in `after`",
        ),
        (
            "missing.toml",
            format!(
                "[[worker]]\nname = \"ok\"\ncmd = [\"true\", \"{m}\"]\n[[worker]]\nname = \"b\"\ncmd = [\"no-such-tool-{m}\"]\n"
            ),
            "missing.toml:6:7: worker `b`: executable `no-such-tool-",
        ),
        (
            "duration.toml",
            format!("[[worker]]\nname = \"a\"\ncmd = [\"true\", \"{m}\"]\ntimeout = \"forever\"\n"),
            "duration.toml:4:11: invalid duration `forever`",
        ),
        (
            "empty.toml",
            String::new(),
            "empty.toml: the plan has no [[worker]] table",
        ),
    ];
    for (name, text, expected) in cases {
        env.write(name, &text);
        let line = refused(&env, &["run", "--plan", name]);
        assert!(
            line.starts_with(&format!("tom-ledger: error: {expected}")),
            "{name}: {line}"
        );
    }
    let line = refused(&env, &["run", "--plan", "no-such-plan.toml"]);
    assert!(
        line.starts_with("tom-ledger: error: no-such-plan.toml: cannot read the plan"),
        "{line}"
    );
}

#[test]
fn run_refuses_a_missing_executable_and_bad_options() {
    let env = env_with_ledger();
    let missing = format!("no-such-tool-{}", env.marker);
    let line = refused(&env, &["run", "--", &missing, "arg"]);
    assert_eq!(
        line,
        format!("tom-ledger: error: executable `{missing}` not found on PATH")
    );
    let line = refused(&env, &["run", "--", "./not-here.sh"]);
    assert!(
        line.ends_with(
            "executable `./not-here.sh` not found in `{}`"
                .replace("{}", env.dir.path().to_str().unwrap())
                .as_str()
        ),
        "{line}"
    );
    for args in [
        &["run", "-j", "0", "--", "true"][..],
        &["run", "--timeout", "soon", "--", "true"],
        &["run"],
        &["run", "--plan", "p.toml", "--", "true"],
        &["--participant", "bad/id", "run", "--", "true"],
        &["--server", "ftp://127.0.0.1:1", "ls"],
        &["--server", "http://127.0.0.1:1/some/path", "ls"],
        &["frobnicate"],
    ] {
        refused(&env, args);
    }
    let line = refused(&env, &["run", "--timeout", "soon", "--", "true"]);
    assert!(line.contains("invalid duration `soon`"), "{line}");
    let line = refused(&env, &["--participant", "bad/id", "ls"]);
    assert!(line.contains("invalid participant id `bad/id`"), "{line}");
}

#[test]
fn operation_ids_are_validated_and_unknown_ones_refused() {
    let env = env_with_ledger();
    for command in ["status", "log", "abort", "trace"] {
        let line = refused(&env, &[command, "../../etc/passwd"]);
        assert!(
            line.contains("invalid operation id `../../etc/passwd`"),
            "{command}: {line}"
        );
        let line = refused(&env, &[command, "no-such-op"]);
        assert_eq!(
            line, "tom-ledger: error: operation `no-such-op` not found",
            "{command}"
        );
    }
    let line = refused(&env, &["exec", "--operation", "no-such-op", "--", "true"]);
    assert_eq!(line, "tom-ledger: error: operation `no-such-op` not found");
    let line = refused(&env, &["temp", "add", "x", "--operation", "no-such-op"]);
    assert_eq!(line, "tom-ledger: error: operation `no-such-op` not found");
    let archived = cli_common::only_operation(&env);
    let line = refused(&env, &["temp", "add", "x", "--operation", &archived]);
    assert_eq!(
        line,
        format!("tom-ledger: error: operation `{archived}` is completed")
    );
    let line = refused(&env, &["temp", "add", "x", "--operation", "a..b"]);
    assert!(line.contains("invalid operation id `a..b`"), "{line}");
}

#[test]
fn exec_and_temp_need_an_operation() {
    let env = env_with_ledger();
    let line = refused(&env, &["exec", "--", "sh", "-c", "true", &env.marker]);
    assert_eq!(
        line,
        "tom-ledger: error: `exec` needs an operation: run it from a worker of `tom-ledger run` or pass `--operation`"
    );
    let line = refused(&env, &["temp", "add", "some/file"]);
    assert!(
        line.starts_with("tom-ledger: error: `temp` needs an operation"),
        "{line}"
    );
    let line = refused(
        &env,
        &["exec", "--operation", "x", "--", "no-such-tool-here"],
    );
    assert_eq!(
        line,
        "tom-ledger: error: executable `no-such-tool-here` not found on PATH"
    );
}

#[test]
fn a_missing_ledger_is_not_created_by_looking() {
    let env = Env::new();
    let out = env.run(&["ls"]);
    out.expect_code(0);
    assert!(out.stdout.is_empty());
    let out = env.run(&["status"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "no live operations\n");
    env.run(&["recover"]).expect_code(0);
    refused_out(&env.run(&["status", "some-op"]), &["status"]);
    refused_out(&env.run(&["log", "some-op"]), &["log"]);
    refused_out(&env.run(&["abort", "some-op"]), &["abort"]);
    assert!(
        !env.ledger.exists(),
        "a read-only command created the ledger directory"
    );
}

#[test]
fn looking_into_an_empty_ledger_directory_creates_nothing_in_it() {
    let env = Env::new();
    std::fs::create_dir(&env.ledger).expect("ledger directory");
    env.run(&["ls"]).expect_code(0);
    env.run(&["status"]).expect_code(0);
    env.run(&["recover", "--dry-run"]).expect_code(0);
    refused_out(&env.run(&["log", "some-op"]), &["log"]);
    refused_out(&env.run(&["trace", "some-op"]), &["trace"]);
    let entries: Vec<_> = std::fs::read_dir(&env.ledger)
        .expect("list the ledger")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(entries.is_empty(), "created {entries:?}");
}

#[test]
fn a_malformed_ledger_url_from_the_environment_is_refused_naming_it() {
    let env = Env::new();
    for args in [&["ls"][..], &["exec", "--", "true"][..]] {
        let mut c = env.bare(args);
        c.env("TOM_LEDGER_URL", "https://ledger.invalid:7000");
        let out = cli_common::run(c);
        refused_out(&out, args);
        assert_eq!(
            out.stderr.trim_end(),
            "tom-ledger: error: server url `https://ledger.invalid:7000`: expected http://HOST:PORT (no TLS in this build)"
        );
    }
    assert!(
        !env.path("_ai").exists(),
        "a refused command created a ledger"
    );
}

#[test]
fn ledger_directory_comes_from_the_flag_then_the_environment_then_the_default() {
    let env = Env::new();
    // The default: _ai/operation_ledger under the current directory.
    cli_common::run(env.bare(&["run", "--", "true"])).expect_code(0);
    assert!(env.path("_ai/operation_ledger/backup").is_dir());
    // TOM_LEDGER_DIR.
    let mut c = env.bare(&["--json", "run", "--", "true"]);
    c.env("TOM_LEDGER_DIR", env.path("from-env"));
    let out = cli_common::run(c);
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["ledger"],
        env.path("from-env").to_str().unwrap()
    );
    // --ledger wins over the environment.
    let mut c = env.cmd(&["--json", "run", "--", "true"]);
    c.env("TOM_LEDGER_DIR", env.path("from-env"));
    let out = cli_common::run(c);
    out.expect_code(0);
    assert_eq!(out.json()[0]["ledger"], env.ledger.to_str().unwrap());
    // The participant id: {command}-{pid} unless given.
    let p = out.json()[0]["participant"].as_str().unwrap().to_string();
    assert!(
        p.starts_with("run-") && p[4..].parse::<u32>().is_ok(),
        "{p}"
    );
    let out = env.run(&["--json", "--participant", "builder", "run", "--", "true"]);
    assert_eq!(out.json()[0]["participant"], "builder");
}
