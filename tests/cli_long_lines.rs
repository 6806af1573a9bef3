//! Long worker lines on a terminal (the progress display path, through a pseudo-terminal)
//! are shown whole up to `--max-line` (16M by default); a longer line is cut there with a
//! note naming the option, never silently. Without a terminal, workers write to stderr
//! and stdout directly, and nothing is cut.

mod cli_common;

use cli_common::{Env, plan, worker};

const LINE: usize = 3 << 20;

/// A plan whose worker writes one line of `LINE` `x` characters, then `after-line`.
fn long_line_plan(env: &Env) -> String {
    let script = format!("head -c {LINE} /dev/zero | tr '\\0' x; echo; echo after-line");
    plan(env, &[worker(env, "long", &script, "")])
}

/// The longest run of `x` in `text`, and what follows it.
fn longest_run(text: &str) -> (usize, &str) {
    let mut best = (0, "");
    let mut rest = text;
    while let Some(start) = rest.find('x') {
        let run = rest[start..]
            .find(|c| c != 'x')
            .unwrap_or(rest.len() - start);
        if run > best.0 {
            best = (run, &rest[start + run..]);
        }
        rest = &rest[start + run..];
    }
    best
}

#[test]
fn on_a_terminal_a_long_line_is_shown_whole_by_default() {
    let env = Env::new();
    let p = long_line_plan(&env);
    let out = cli_common::run(env.terminal_cmd(&["run", "--plan", &p]));
    out.expect_code(0);
    let (run, after) = longest_run(&out.stdout);
    assert_eq!(run, LINE, "the line was cut");
    assert!(
        !after.starts_with(" [line cut"),
        "{}",
        &after[..80.min(after.len())]
    );
    assert!(out.stdout.contains("[long] after-line"));
    env.assert_no_leftovers();
}

#[test]
fn on_a_terminal_a_line_over_max_line_is_cut_with_a_note() {
    let env = Env::new();
    let p = long_line_plan(&env);
    let out = cli_common::run(env.terminal_cmd(&["run", "--max-line", "1M", "--plan", &p]));
    out.expect_code(0);
    let (run, after) = longest_run(&out.stdout);
    assert_eq!(run, 1 << 20);
    assert!(
        after.starts_with(" [line cut at 1048576 bytes: raise the limit with --max-line]"),
        "{}",
        &after[..80.min(after.len())]
    );
    assert!(out.stdout.contains("[long] after-line"));

    let out = cli_common::run(env.terminal_cmd(&["run", "--max-line", "4M", "--plan", &p]));
    out.expect_code(0);
    assert_eq!(longest_run(&out.stdout).0, LINE);
    env.assert_no_leftovers();
}

#[test]
fn without_a_terminal_long_lines_pass_through_whole() {
    let env = Env::new();
    let p = long_line_plan(&env);
    let out = env.run(&["run", "--max-line", "1K", "--plan", &p]);
    out.expect_code(0);
    assert_eq!(longest_run(&out.stdout).0, LINE);
    env.assert_no_leftovers();
}

#[test]
fn bad_max_line_values_are_refused() {
    let env = Env::new();
    for (value, why) in [
        ("lots", "expected bytes with an optional K, M or G"),
        ("10", "too small (at least 1K)"),
        ("5G", "too large (at most 1G)"),
    ] {
        let out = env.run(&["run", "--max-line", value, "--", "true"]);
        out.expect_code(2);
        assert!(out.stderr.contains(why), "{value}: {}", out.stderr);
        assert!(!env.ledger.exists());
    }
}
