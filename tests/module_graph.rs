//! The library's module graph is one-way: every `crate::` path in a module names a module
//! of a lower layer (or, for the error type and the ids, which name each other, its own).
//! The layers, lowest first, are the README's (Layout); the command (`src/cli/`, part of
//! the `tom-ledger` binary) sits above them all and reaches the library only through its
//! public API.
//!
//! The check reads the sources: comments are dropped, then every `crate::name` and every
//! `crate::{name, ...}` group counts as a dependency of the file's top-level module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules of the library, lowest layer first.
const LAYERS: &[&[&str]] = &[
    // Leaves: injectable time, the boxed future of stored callbacks, why a worker stopped.
    &["clock", "future", "stop_reason", "revision"],
    // The one error type and the validated ids: they name each other.
    &["error", "ids"],
    // The data on disk.
    &["model"],
    // Backends, processes, temp paths, polling helpers, the timeline read from a log:
    // none knows another.
    &["store", "process", "temp_path", "poll", "timeline"],
    // Participant liveness and the signal cleanup, over the layers below.
    &["presence", "cleanup"],
    // Operations, calls, crash handling: uses everything below.
    &["ledger"],
    // The ledger server: serves any store over HTTP.
    &["server"],
    // The scenario simulator: participants and a runner over the library.
    &["simulate"],
];

/// Layers whose modules may name each other.
const MUTUAL: &[&str] = &["error", "ids"];

/// What the pure core of the ledger (`src/ledger/core/`) may name: data, never I/O.
const CORE_MAY_USE: &[&str] = &[
    "clock",
    "error",
    "ids",
    "model",
    "future",
    "stop_reason",
    "revision",
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The source without comments (line and block), string contents kept apart.
fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let chars: Vec<char> = source.chars().collect();
    let (mut i, mut in_string, mut block_depth) = (0, false, 0usize);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if block_depth > 0 {
            if c == '*' && next == Some('/') {
                block_depth -= 1;
                i += 2;
            } else if c == '/' && next == Some('*') {
                block_depth += 1;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        if in_string {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
            // String contents are not code: blank them out.
            out.push(if c == '"' { '"' } else { ' ' });
            i += 1;
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                block_depth = 1;
                i += 2;
            }
            // A char literal such as '"' must not open a string.
            ('\'', _) if chars.get(i + 2) == Some(&'\'') => {
                out.push_str("' '");
                i += 3;
            }
            ('"', _) => {
                in_string = true;
                out.push('"');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The top-level modules named by `crate::` paths in `code` (comments already stripped).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `tom_dist_crate::` or `mycrate::` are other paths.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            let name: String = trimmed
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The first segment of each item of a `{a::b, c, d::{e, f}}` group (after its `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut expecting) = (0usize, true);
    let mut current = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && (c.is_alphanumeric() || c == '_') => current.push(c),
            _ if expecting && !current.is_empty() => {
                heads.push(std::mem::take(&mut current));
                expecting = false;
            }
            _ => {}
        }
    }
    if expecting && !current.is_empty() {
        heads.push(current);
    }
    heads
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/ledger/core/x.rs` -> ["ledger", "core", "x.rs"]
fn parts(src: &Path, file: &Path) -> Vec<String> {
    file.strip_prefix(src)
        .expect("under src")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

/// Every edge of the library that goes up or sideways, as readable lines.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for file in files {
        let parts = parts(src, &file);
        let top = parts[0].trim_end_matches(".rs").to_string();
        // The crate root declares every module; the binary and its command are above all.
        if matches!(top.as_str(), "lib" | "main" | "cli") {
            continue;
        }
        let shown = file
            .strip_prefix(src.parent().expect("src has a parent"))
            .unwrap_or(&file);
        let Some(layer) = layer_of(&top) else {
            bad.push(format!(
                "{}: module `{top}` has no layer (add it to LAYERS here and to the README's Layout)",
                shown.display()
            ));
            continue;
        };
        let code = strip_comments(&std::fs::read_to_string(&file).expect("read source"));
        let in_core = parts.len() > 2 && parts[0] == "ledger" && parts[1] == "core";
        for used in crate_paths(&code) {
            if used == top {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < layer => {}
                Some(l)
                    if l == layer
                        && MUTUAL.contains(&top.as_str())
                        && MUTUAL.contains(&used.as_str()) => {}
                Some(l) => bad.push(format!(
                    "{}: `{top}` (layer {layer}) uses `{used}` (layer {l}), not below it",
                    shown.display()
                )),
                None => bad.push(format!(
                    "{}: `{top}` uses `crate::{used}`, which has no layer",
                    shown.display()
                )),
            }
        }
        if in_core {
            bad.extend(core_violations(&code, &parts, shown));
        }
    }
    bad
}

/// The pure core names data only: no store, process, presence, cleanup, nor the rest of
/// the ledger (through `crate::ledger::` or `super::` out of `core/`).
fn core_violations(code: &str, parts: &[String], shown: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for used in crate_paths(code) {
        if used == "ledger" {
            if code
                .match_indices("crate::ledger::")
                .any(|(i, _)| !code[i..].starts_with("crate::ledger::core"))
            {
                bad.push(format!(
                    "{}: the pure core uses the ledger above it",
                    shown.display()
                ));
            }
        } else if !CORE_MAY_USE.contains(&used.as_str()) {
            bad.push(format!(
                "{}: the pure core uses `{used}` (only data may be used)",
                shown.display()
            ));
        }
    }
    // `super::` from `core/mod.rs` is the ledger; from `core/x.rs`, `super::super::` is.
    let escape = match parts {
        [_, _, file] if file == "mod.rs" => Some("super::"),
        [_, _, _] => Some("super::super::"),
        _ => None,
    };
    if let Some(escape) = escape.filter(|e| code.contains(e)) {
        bad.push(format!(
            "{}: the pure core reaches the ledger through `{escape}`",
            shown.display()
        ));
    }
    bad
}

#[test]
fn no_module_depends_on_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "the module graph is not one-way:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_layer_named_here_is_in_the_readme() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let exists = |m: &&&str| src.join(**m).is_dir() || src.join(format!("{}.rs", **m)).is_file();
    let order = LAYERS
        .iter()
        .map(|layer| layer.iter().filter(exists).copied().collect::<Vec<_>>())
        .filter(|layer| !layer.is_empty())
        .map(|layer| layer.join(", "))
        .collect::<Vec<_>>()
        .join(" < ");
    assert!(
        readme.contains(&order),
        "README.md's Layout states the layer order `{order}`"
    );
}

// ----- the checker itself -----

#[test]
fn paths_in_code_count_and_paths_in_comments_and_strings_do_not() {
    let code = strip_comments(
        r#"
        use crate::error::{Error, Result};
        use crate::{ids::CallId, model::{LedgerData, time}, clock};
        // crate::ledger::BoxFuture in a comment
        /* crate::store in a /* nested */ block */
        /// [`crate::cleanup`] in a doc comment
        fn f() { crate::process::registry(); let s = "crate::presence"; let q = '"'; }
        use tom_dist_crate::ledger;
        "#,
    );
    let found: Vec<String> = crate_paths(&code).into_iter().collect();
    assert_eq!(found, ["clock", "error", "ids", "model", "process"]);
}

#[test]
fn an_edge_up_is_reported_with_its_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("ledger/core")).expect("create dirs");
    std::fs::write(src.join("cleanup.rs"), "use crate::ledger::BoxFuture;\n").expect("write");
    std::fs::write(src.join("error.rs"), "use crate::ids::CallId;\n").expect("write");
    std::fs::write(src.join("ids.rs"), "use crate::error::Error;\n").expect("write");
    std::fs::write(src.join("gadget.rs"), "").expect("write");
    std::fs::write(
        src.join("ledger/mod.rs"),
        "use crate::cleanup::CleanupHandler;\n",
    )
    .expect("write");
    std::fs::write(
        src.join("ledger/core/mod.rs"),
        "use super::shared::OpShared;\n",
    )
    .expect("write");
    std::fs::write(
        src.join("ledger/core/join.rs"),
        "use crate::store::Store;\nuse crate::model::LedgerData;\n",
    )
    .expect("write");
    let bad = violations(&src);
    assert_eq!(bad.len(), 4, "{bad:#?}");
    assert!(
        bad[0].contains("src/cleanup.rs") && bad[0].contains("uses `ledger`"),
        "{bad:#?}"
    );
    assert!(
        bad[1].contains("src/gadget.rs") && bad[1].contains("no layer"),
        "{bad:#?}"
    );
    assert!(
        bad[2].contains("src/ledger/core/join.rs") && bad[2].contains("`store`"),
        "{bad:#?}"
    );
    assert!(
        bad[3].contains("src/ledger/core/mod.rs") && bad[3].contains("super::"),
        "{bad:#?}"
    );
}
