//! Unreadable operation files: `ls` and `status` list every operation and mark the
//! unreadable one with its error; only a command whose own target is unreadable fails;
//! `recover --dry-run` and `recover` give the same answer. Files left by a create that
//! failed part-way (planted here as a full disk would leave them) are removed by the next
//! `recover`, and nothing else is.

mod cli_common;

use cli_common::{Env, Live, assert_same, plan, wait_until, worker};
use serde_json::Value;

const CORRUPT: &str = "20260101T000000.000-run-1-deadbeef";

/// The ledger's files, leaving out those of the running operation `live` (its run writes
/// them while the test looks).
fn files_but(env: &Env, live: &str) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = env.ledger_snapshot();
    files.retain(|path, _| !path.to_string_lossy().contains(live));
    files
}

fn only_line<'a>(text: &'a str, needle: &str) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "one line with {needle} expected in {text}");
    lines[0]
}

#[test]
fn an_unreadable_operation_is_listed_with_its_error_and_hides_nothing() {
    let env = Env::new();
    env.run(&["run", "--", "true"]).expect_code(0);
    env.run(&["run", "--", "true"]).expect_code(0);
    let archived: Vec<String> = env
        .run(&["ls", "--json"])
        .json()
        .iter()
        .map(|o| o["operation"].as_str().unwrap().to_string())
        .collect();
    // A live operation, held open by its run.
    let p = plan(
        &env,
        &[worker(
            &env,
            "holder",
            "touch $D/ready; while [ ! -e $D/release ]; do sleep 0.01; done",
            "",
        )],
    );
    let mut run = Live::start(env.cmd(&["--json", "run", "--plan", &p]));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let live = serde_json::from_str::<Value>(&started).unwrap()["operation"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the holder to run", || env.path("ready").exists());
    // A truncated live operation, and a truncated archived one.
    let text = std::fs::read_to_string(env.ledger.join(format!("{live}.operation.json"))).unwrap();
    let text = text.replace(&live, CORRUPT);
    std::fs::write(
        env.ledger.join(format!("{CORRUPT}.operation.json")),
        &text[..text.len() / 2],
    )
    .unwrap();
    let archived_file = env
        .ledger
        .join("backup")
        .join(&archived[0])
        .join("operation.json");
    std::fs::write(&archived_file, "{\"operationId\": ").unwrap();

    let before = files_but(&env, &live);
    let out = env.run(&["ls"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    let line = only_line(&out.stdout, CORRUPT);
    assert!(
        line.contains("live") && line.contains("unreadable"),
        "{line}"
    );
    assert!(
        line.contains(&format!("{CORRUPT}.operation.json")),
        "{line}"
    );
    let line = only_line(&out.stdout, &archived[0]);
    assert!(
        line.contains("archived") && line.contains("unreadable"),
        "{line}"
    );
    assert!(only_line(&out.stdout, &archived[1]).contains("completed"));
    assert!(only_line(&out.stdout, &live).contains("running"));
    let listed = env.run(&["ls", "--json"]).json();
    assert_eq!(listed.len(), 4, "{listed:#?}");
    let corrupt = listed.iter().find(|o| o["operation"] == CORRUPT).unwrap();
    assert!(
        corrupt["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{corrupt}"
    );
    assert_eq!(corrupt["archived"], false);

    // `status` of every live operation shows both; of the corrupt one alone, it fails.
    let out = env.run(&["status"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains(&format!("operation {live}\n  state        running")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("operation {CORRUPT}\n  unreadable   ")),
        "{}",
        out.stdout
    );
    let statuses = env.run(&["--json", "status"]).json();
    assert_eq!(statuses.len(), 2, "{statuses:#?}");
    let out = env.run(&["status", CORRUPT]);
    out.expect_code(1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("{CORRUPT}.operation.json")),
        "{}",
        out.stderr
    );
    env.run(&["status", &live]).expect_code(0);
    env.run(&["status", &archived[1]]).expect_code(0);
    assert_same(
        &before,
        &files_but(&env, &live),
        "ls and status changed the ledger",
    );

    // recover --dry-run and recover agree: the corrupt one cannot be recovered.
    let dry = env.run(&["recover", "--dry-run"]);
    dry.expect_code(1);
    assert_same(
        &before,
        &files_but(&env, &live),
        "recover --dry-run changed the ledger",
    );
    let real = env.run(&["recover"]);
    real.expect_code(1);
    assert_eq!(dry.stderr, real.stderr);
    assert!(
        dry.stderr.starts_with(&format!(
            "tom-ledger: error: cannot recover operation {CORRUPT}: "
        )),
        "{}",
        dry.stderr
    );
    assert!(!dry.stdout.contains(&live) && !real.stdout.contains(&live));
    let dry = env.run(&["--json", "recover", "--dry-run"]);
    let real = env.run(&["--json", "recover"]);
    assert_eq!(dry.json(), real.json());

    std::fs::write(env.path("release"), "").unwrap();
    run.finish().expect_code(0);
    std::fs::remove_file(env.ledger.join(format!("{CORRUPT}.operation.json"))).unwrap();
    env.assert_no_leftovers();
}

#[test]
fn recover_removes_what_a_failed_create_left_and_nothing_else() {
    let env = Env::new();
    env.run(&["run", "--", "true"]).expect_code(0);
    let op = "20260101T000000.000-run-7-0badf00d";
    let other = "20260101T000001.000-run-8-0badf00e";
    let linked = "20260101T000002.000-run-9-0badf00f";
    let l = &env.ledger;
    // What a create that ran out of disk leaves: a partial staging file, empty logs.
    let leftovers = [
        l.join(format!(".{op}.operation.json.tmp")),
        l.join(format!("{op}.operation.log")),
        l.join(format!("{op}.operation.debug.log")),
    ];
    std::fs::write(&leftovers[0], "{\"operationId\": \"2026").unwrap();
    std::fs::write(&leftovers[1], "").unwrap();
    std::fs::write(&leftovers[2], "").unwrap();
    // Not proven leftovers: a log with something in it, a file of another name, and a
    // staging name that is a symlink to a file outside the ledger.
    std::fs::write(l.join(format!("{other}.operation.log")), "a line\n").unwrap();
    std::fs::write(l.join("notes.txt"), "mine\n").unwrap();
    let sentinel = env.write("sentinel", "outside\n");
    std::os::unix::fs::symlink(&sentinel, l.join(format!(".{linked}.operation.json.tmp"))).unwrap();

    let before = env.ledger_snapshot();
    let dry = env.run(&["recover", "--dry-run"]);
    dry.expect_code(0);
    assert_same(
        &before,
        &env.ledger_snapshot(),
        "recover --dry-run changed the ledger",
    );
    for path in &leftovers {
        only_line(&dry.stdout, path.to_str().unwrap());
    }
    assert_eq!(dry.stdout.lines().count(), 3, "{}", dry.stdout);

    let out = env.run(&["recover"]);
    out.expect_code(0);
    for path in &leftovers {
        assert!(!path.exists(), "{} not removed", path.display());
        assert!(only_line(&out.stdout, path.to_str().unwrap()).starts_with("removed "));
    }
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert!(!l.join(format!("{op}.operation.json.lock")).exists());
    assert!(l.join(format!("{other}.operation.log")).exists());
    assert!(l.join("notes.txt").exists());
    assert!(
        l.join(format!(".{linked}.operation.json.tmp"))
            .symlink_metadata()
            .is_ok()
    );
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "outside\n");
    let again = env.run(&["recover"]);
    again.expect_code(0);
    assert_eq!(again.stdout, "nothing to recover\n");
    env.run(&["ls"]).expect_code(0);
}
