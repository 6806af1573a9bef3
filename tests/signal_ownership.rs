//! Who may take over the process: only `CleanupHandler` listens for signals and exits,
//! and only once the application installs it. The behaviour is tested with real
//! processes (`signal_cleanup`, `cli_signals`); this reads the sources so that no second
//! signal machine or hidden exit creeps in beside it.

use std::path::{Path, PathBuf};

/// What listens for a signal or ends the process.
const TAKEOVER: &[&str] = &[
    "process::exit(",
    "SignalKind",
    "signal::unix",
    "signal_hook",
    "libc::signal(",
    "sigaction(",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `file: line` for each line of the files under `dir` (relative to `src/`) that takes
/// over the process, except in `allowed`.
fn takeovers(dir: &str, allowed: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(dir), &mut files);
    let mut found = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        if allowed.contains(&name.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if TAKEOVER.iter().any(|t| code.contains(t)) {
                found.push(format!("src/{name}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn only_the_cleanup_handler_listens_for_signals_or_exits() {
    // vfork.rs resets caught signals to their default in the child, before exec.
    let found = takeovers(".", &["cleanup.rs", "main.rs", "process/vfork.rs"]);
    let found: Vec<_> = found
        .into_iter()
        .filter(|l| !l.starts_with("src/cli/"))
        .collect();
    assert!(
        found.is_empty(),
        "outside CleanupHandler:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_command_has_no_signal_machine_of_its_own() {
    let found = takeovers("cli", &[]);
    assert!(
        found.is_empty(),
        "the command listens through CleanupHandler only:\n{}",
        found.join("\n")
    );
}
