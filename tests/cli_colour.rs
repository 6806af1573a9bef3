//! Diagnostics on stderr are plain text unless stderr is a terminal, and `NO_COLOR`
//! turns colour off there too. The diagnostic used: the warning about a temp resource
//! whose deletion is refused (a directory on its path became a symlink after it was
//! registered).

mod cli_common;

use cli_common::{Env, Out};

/// A plan whose failing worker swaps the directory of its temp resource for a symlink,
/// so the deletion is refused with a warning.
/// Each run needs `d` absent when the plan is loaded (an existing symlink would be
/// resolved at registration); [`fresh`] removes what the previous run left.
fn failing_plan(env: &Env) -> String {
    let dir = env.path("d");
    let other = env.path("other");
    let script = format!(
        "rm -rf '{d}' && mkdir -p '{o}' && ln -s '{o}' '{d}'; exit 1",
        d = dir.display(),
        o = other.display()
    );
    let text = format!(
        "[[worker]]\nname = \"a\"\ncmd = [\"sh\", \"-c\", {script:?}, \"{}\"]\ntemp = [{:?}]\n",
        env.marker,
        dir.join("child").display().to_string()
    );
    env.write("plan.toml", &text)
        .to_str()
        .expect("utf-8")
        .into()
}

/// Remove the symlink a previous run of the plan left.
fn fresh(env: &Env) {
    let _ = std::fs::remove_file(env.path("d"));
}

/// Whether `text` holds an ANSI colour sequence (`ESC [ ... m`).
fn has_colour(text: &str) -> bool {
    text.split('\x1b').skip(1).any(|rest| {
        let Some(body) = rest.strip_prefix('[') else {
            return false;
        };
        let end = body
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(body.len());
        body[end..].starts_with('m')
    })
}

fn warning_shown(out: &Out, text: &str) {
    out.expect_code(1);
    assert!(text.contains("TEMP_REFUSED"), "{text:?}");
}

#[test]
fn stderr_that_is_not_a_terminal_gets_no_colour() {
    let env = Env::new();
    let plan = failing_plan(&env);
    let out = env.run(&["run", "--plan", &plan]);
    warning_shown(&out, &out.stderr);
    assert!(!has_colour(&out.stderr), "{:?}", out.stderr);
    env.assert_no_leftovers();
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let env = Env::new();
    let plan = failing_plan(&env);
    let mut c = env.terminal_cmd(&["run", "--plan", &plan]);
    c.env_remove("NO_COLOR");
    let out = cli_common::run(c);
    warning_shown(&out, &out.stdout);
    assert!(has_colour(&out.stdout), "{:?}", out.stdout);

    for value in ["1", "yes"] {
        fresh(&env);
        let mut c = env.terminal_cmd(&["run", "--plan", &plan]);
        c.env("NO_COLOR", value);
        let out = cli_common::run(c);
        warning_shown(&out, &out.stdout);
        assert!(
            !has_colour(&out.stdout),
            "NO_COLOR={value}: {:?}",
            out.stdout
        );
    }
    env.assert_no_leftovers();
}
