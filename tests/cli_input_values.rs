//! Values that cannot work are refused before anything starts (exit 2, one line, the
//! ledger unchanged): NUL bytes in a plan's `cmd` or `env`, variable names holding `=`,
//! durations under 1 ms or over 365 days, a ledger path that is a regular file. Command
//! arguments that are not UTF-8 are passed through as bytes.

mod cli_common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use cli_common::{Env, assert_same};

/// Run a command that must be refused; returns its one error line.
fn refused(env: &Env, args: &[&str]) -> String {
    let before = env.ledger_snapshot();
    let out = env.run(args);
    assert_eq!(out.code(), 2, "{args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out:?}");
    assert!(out.stderr.starts_with("tom-ledger: error: "), "{out:?}");
    assert_same(&before, &env.ledger_snapshot(), &format!("{args:?}"));
    env.assert_no_leftovers();
    out.stderr.trim_end().to_string()
}

fn env_with_ledger() -> Env {
    let env = Env::new();
    env.run(&["run", "--", "true"]).expect_code(0);
    env
}

#[test]
fn nul_bytes_and_bad_variable_names_in_a_plan_are_refused() {
    let env = env_with_ledger();
    let m = &env.marker;
    // Each worker would leave `started` behind if it ran.
    let run = format!("touch $D/started {m}");
    let cases = [
        (
            format!("cmd = [\"sh\", \"-c\", \"{run}\", \"a\\u0000b\"]"),
            "worker `a`: `cmd` argument \"a\\0b\" holds a NUL byte",
        ),
        (
            format!("cmd = [\"sh\", \"-c\", \"{run}\"]\nenv = {{ X = \"a\\u0000b\" }}"),
            "worker `a`: `env` value of `X` holds a NUL byte",
        ),
        (
            format!("cmd = [\"sh\", \"-c\", \"{run}\"]\nenv = {{ \"A=B\" = \"1\" }}"),
            "worker `a`: `env` variable name \"A=B\" holds `=`",
        ),
        (
            format!("cmd = [\"sh\", \"-c\", \"{run}\"]\nenv = {{ \"\" = \"1\" }}"),
            "worker `a`: `env` has an empty variable name",
        ),
        (
            format!("cmd = [\"sh\", \"-c\", \"{run}\"]\ntemp = [\"x\\u0000y\"]"),
            "worker `a`: `temp` path \"x\\0y\" holds a NUL byte",
        ),
    ];
    for (body, expected) in cases {
        let text = format!(
            "[defaults]\nenv = {{ D = \"{}\" }}\n[[worker]]\nname = \"a\"\n{body}\n",
            env.dir.path().display()
        );
        env.write("plan.toml", &text);
        let line = refused(&env, &["run", "--plan", "plan.toml"]);
        assert!(line.ends_with(expected), "{line}\nexpected: {expected}");
        assert!(line.contains("plan.toml:"), "{line}");
        assert!(!env.path("started").exists(), "a worker ran: {text}");
    }
}

#[test]
fn durations_under_a_millisecond_or_too_large_are_refused() {
    let env = env_with_ledger();
    for (value, why) in [
        ("0", "too small (at least 1ms)"),
        ("0.0000001", "too small (at least 1ms)"),
        ("0.5ms", "too small (at least 1ms)"),
        ("99999999999d", "too large (at most 365d)"),
        ("366d", "too large (at most 365d)"),
    ] {
        for flag in ["--timeout", "--grace"] {
            let line = refused(&env, &["run", flag, value, "--", "true"]);
            assert!(
                line.contains(&format!("invalid duration `{value}`: {why}")),
                "{flag} {value}: {line}"
            );
        }
        let line = refused(
            &env,
            &["exec", "--operation", "x", "--timeout", value, "--", "true"],
        );
        assert!(line.contains(why), "{line}");
    }
    let line = refused(&env, &["run", "--timeout", "3 fortnights", "--", "true"]);
    assert!(line.contains("expected a number with a unit"), "{line}");
    for (timeout, why) in [
        ("0", "too small (at least 1ms)"),
        ("\"0s\"", "too small (at least 1ms)"),
        ("99999999999999", "too large (at most 365d)"),
    ] {
        env.write(
            "plan.toml",
            &format!("[[worker]]\nname = \"a\"\ncmd = [\"true\"]\ntimeout = {timeout}\n"),
        );
        let line = refused(&env, &["run", "--plan", "plan.toml"]);
        assert!(line.contains("plan.toml:4:11:"), "{line}");
        assert!(line.ends_with(why), "{line}");
    }
    // A day is a unit, and the smallest duration works.
    let out = env.run(&["run", "--timeout", "1d", "--grace", "1ms", "--", "true"]);
    out.expect_code(0);
}

#[test]
fn a_ledger_path_that_is_a_regular_file_is_refused_by_every_command() {
    let env = Env::new();
    let file = env.write("not-a-dir", "keep me\n");
    let below = file.join("sub");
    for ledger in [&file, &below] {
        let ledger = ledger.to_str().expect("utf-8");
        for args in [
            &["ls"][..],
            &["status"],
            &["status", "some-op"],
            &["log", "some-op"],
            &["abort", "some-op"],
            &["trace", "some-op"],
            &["recover"],
            &["recover", "--dry-run"],
            &["run", "--", "true"],
            &["exec", "--operation", "some-op", "--", "true"],
            &["temp", "add", "--operation", "some-op", "x"],
        ] {
            let mut full = vec!["--ledger", ledger];
            full.extend_from_slice(args);
            let out = cli_common::run(env.bare(&full));
            assert_eq!(out.code(), 2, "{full:?}: {out:?}");
            assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
            assert!(out.stderr.contains("is not a directory"), "{out:?}");
            // The same through the environment.
            let mut c = env.bare(args);
            c.env("TOM_LEDGER_DIR", ledger);
            let out = cli_common::run(c);
            assert_eq!(out.code(), 2, "TOM_LEDGER_DIR {args:?}: {out:?}");
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
    env.assert_no_leftovers();
}

#[test]
fn arguments_that_are_not_utf8_are_passed_through_as_bytes() {
    let env = Env::new();
    let raw = OsStr::from_bytes(b"caf\xe9-\xff");
    let script = "printf %s \"$1\" > \"$D/arg\"";
    let mut c = env.cmd(&["run", "--", "sh", "-c", script, &env.marker]);
    c.arg(raw);
    cli_common::run(c).expect_code(0);
    assert_eq!(std::fs::read(env.path("arg")).unwrap(), raw.as_bytes());

    // `exec` inside a worker does the same.
    let nested = "tom-ledger exec -- sh -c 'printf %s \"$1\" > \"$D/nested\"' \"$0\" \"$1\"";
    let mut c = env.cmd(&["run", "--", "sh", "-c", nested, &env.marker]);
    c.arg(raw);
    cli_common::run(c).expect_code(0);
    assert_eq!(std::fs::read(env.path("nested")).unwrap(), raw.as_bytes());
    env.assert_no_leftovers();
}
