//! What `cargo install tom-dist-ledger` installs: `tom-ledger` alone. The executables in
//! `workers/` are built only with the `test-workers` feature, which the package's
//! dev-dependency on itself turns on for `cargo test`, `cargo bench` and the examples.

use std::collections::BTreeSet;
use std::path::Path;

fn manifest() -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).expect("read Cargo.toml");
    text.parse().expect("Cargo.toml is TOML")
}

/// The `[[bin]]` tables: name, path and required features.
fn bins(manifest: &toml::Table) -> Vec<(String, String, Vec<String>)> {
    let Some(bins) = manifest.get("bin").and_then(|b| b.as_array()) else {
        return Vec::new();
    };
    bins.iter()
        .map(|b| {
            let field = |k: &str| b.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let required = b
                .get("required-features")
                .and_then(|r| r.as_array())
                .map(|r| {
                    r.iter()
                        .filter_map(|f| f.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (field("name"), field("path"), required)
        })
        .collect()
}

#[test]
fn only_tom_ledger_is_installed_and_every_worker_needs_the_test_feature() {
    let manifest = manifest();
    let bins = bins(&manifest);
    let installed: Vec<&str> = bins
        .iter()
        .filter(|(_, _, required)| required.is_empty())
        .map(|(name, _, _)| name.as_str())
        .collect();
    assert_eq!(
        installed,
        ["tom-ledger"],
        "binaries `cargo install` would install"
    );
    for (name, path, required) in &bins {
        if name != "tom-ledger" {
            assert!(
                path.starts_with("workers/"),
                "{name} lives in workers/, not {path}"
            );
            assert_eq!(required, &["test-workers"], "{name}'s required-features");
        }
    }
    let features = manifest.get("features").and_then(|f| f.as_table());
    let default = features.and_then(|f| f.get("default"));
    assert!(
        default.is_none_or(|d| !d.to_string().contains("test-workers")),
        "test-workers is not a default feature"
    );
}

#[test]
fn the_tests_build_every_worker_through_the_self_dev_dependency() {
    let manifest = manifest();
    let own = manifest
        .get("dev-dependencies")
        .and_then(|d| d.get("tom-dist-ledger"))
        .expect("a dev-dependency on the package itself");
    assert_eq!(own.get("path").and_then(|p| p.as_str()), Some("."));
    let features: Vec<&str> = own
        .get("features")
        .and_then(|f| f.as_array())
        .map(|f| f.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(features.contains(&"test-workers"), "{features:?}");
    // Every executable in workers/ is registered (a file that is not would never be
    // built); `common.rs` is the module they share.
    let registered: BTreeSet<String> = bins(&manifest).into_iter().map(|(_, p, _)| p).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers");
    for entry in std::fs::read_dir(&dir).expect("read workers/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".rs") && name != "common.rs" {
            let path = format!("workers/{name}");
            assert!(
                registered.contains(&path),
                "{path} is not a [[bin]] in Cargo.toml"
            );
        }
    }
}

/// The worker executables are there when the tests run: cargo built them.
#[test]
fn the_worker_executables_exist() {
    for exe in [
        env!("CARGO_BIN_EXE_worker-supervisor"),
        env!("CARGO_BIN_EXE_worker-fork-tree"),
        env!("CARGO_BIN_EXE_worker-ledger-peer"),
    ] {
        assert!(Path::new(exe).is_file(), "{exe}");
    }
}
