//! A plan may run what an earlier step builds: a command given as a path (it holds a `/`)
//! is looked for when its worker starts, and if it is missing then, that worker fails with
//! an error naming it. Bare names are still checked before anything starts. The example
//! build plan runs the program it links directly.

mod cli_common;

use std::path::Path;

use cli_common::{Env, of_worker, plan, worker};

#[test]
fn a_step_runs_the_program_an_earlier_step_builds() {
    let env = Env::new();
    let build = worker(
        &env,
        "build",
        "mkdir -p $D/out && printf '#!/bin/sh\\necho \"built $1\" > \"$D/ran\"\\n' > $D/out/prog.tmp \
         && chmod +x $D/out/prog.tmp && mv $D/out/prog.tmp $D/out/prog",
        "",
    );
    let run_it = format!(
        "[[worker]]\nname = \"use\"\ncmd = [\"out/prog\", \"{}\"]\nafter = [\"build\"]\n",
        env.marker
    );
    let p = plan(&env, &[build, run_it]);
    let out = env.run(&["--json", "run", "--plan", &p]);
    out.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(env.path("ran")).unwrap().trim(),
        format!("built {}", env.marker)
    );
    env.assert_no_leftovers();
}

#[test]
fn a_program_path_missing_when_its_worker_starts_fails_that_worker() {
    let env = Env::new();
    let nothing = worker(&env, "nothing", "true", "");
    let run_it = format!(
        "[[worker]]\nname = \"use\"\ncmd = [\"out/missing\", \"{}\"]\nafter = [\"nothing\"]\n",
        env.marker
    );
    let p = plan(&env, &[nothing, run_it]);
    let out = env.run(&["--json", "run", "--plan", &p]);
    out.expect_code(1);
    let events = out.events("worker_finished");
    let done = of_worker(&events, "nothing");
    assert_eq!(done[0]["status"], "ok");
    let failed = of_worker(&events, "use");
    assert_eq!(failed[0]["status"], "failed", "{failed:?}");
    let error = failed[0]["error"].as_str().unwrap_or_default();
    let resolved = env.path("out/missing");
    assert_eq!(
        error,
        format!(
            "cannot start `out/missing` (`{}`): No such file or directory (os error 2)",
            resolved.display()
        )
    );
    env.assert_no_leftovers();
}

#[test]
fn a_bare_name_that_is_not_on_path_is_refused_before_anything_starts() {
    let env = Env::new();
    let first = worker(&env, "first", "touch $D/started", "");
    let typo = "[[worker]]\nname = \"typo\"\ncmd = [\"no-such-tool-xyz\"]\nafter = [\"first\"]\n";
    let p = plan(&env, &[first, typo.to_string()]);
    let out = env.run(&["run", "--plan", &p]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("worker `typo`: executable `no-such-tool-xyz` not found on PATH"),
        "{}",
        out.stderr
    );
    assert!(!env.path("started").exists());
    assert!(!env.ledger.exists(), "the ledger was created");
}

#[test]
fn the_example_build_plan_runs_its_program_directly() {
    let env = Env::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/build");
    let text = std::fs::read_to_string(example.join("plan.toml")).unwrap();
    assert!(!text.contains("sh -c"), "the example still needs a shell");
    assert!(text.contains("cmd = [\"out/hello\"]"), "{text}");
    // A copy, so the build writes into the test's directory only.
    let dir = env.path("build");
    std::fs::create_dir(&dir).unwrap();
    for name in ["plan.toml", "gen.sh", "compile.sh"] {
        std::fs::copy(example.join(name), dir.join(name)).unwrap();
    }
    let out = env.run(&["run", "--plan", "build/plan.toml"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("built by tom-ledger: total = 550"),
        "{out:?}"
    );
    assert!(dir.join("out/hello").is_file());
    env.assert_no_leftovers();
}
