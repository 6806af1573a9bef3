//! Temp-resource paths under a real `tom-ledger run` whose worker fails: what registration
//! refuses, what cleanup refuses even when a ledger file names it, symlinks, mounts inside
//! a registered directory, and non-UTF-8 paths. Every protected path is a sentinel inside
//! the test's own directory (HOME is pointed at one); the real `/` and home are never at
//! stake.

mod cli_common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cli_common::{Env, Out, only_operation, plan, run, worker};
use tom_dist_ledger::model::TempResource;

/// A directory with a file in it that must survive.
fn sentinel_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    let file = path.join("sentinel");
    std::fs::write(&file, "must survive").unwrap();
    file
}

/// `tom-ledger run -- sh -c SCRIPT` with HOME pointed at `home`.
fn run_script(env: &Env, home: &Path, script: &str) -> Out {
    run_with(env, home, script, &[])
}

fn run_with(env: &Env, home: &Path, script: &str, vars: &[(&str, &OsStr)]) -> Out {
    let mut cmd = env.cmd(&["run", "--", "sh", "-c", script, &env.marker]);
    cmd.env("HOME", home);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run(cmd)
}

/// The operation log of the only operation (live or archived).
fn log_of(env: &Env) -> String {
    let op = only_operation(env);
    let out = env.run(&["log", &op]);
    out.expect_code(0);
    out.stdout
}

/// A tmpfs mounted for the test, unmounted when dropped (also on panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount one at `at`, or say why not (the caller skips that part and prints it).
    fn mount(at: &Path) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tom-ledger-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn root_home_and_ledger_are_refused_at_registration() {
    let env = Env::new();
    let home = env.path("home");
    let home_sentinel = sentinel_dir(&home);
    // `$OUT/` with OUT unset is `/`. Each refusal: exit 2 and one line. A good path given
    // together with a refused one is not registered either.
    let script = r#"
        tom-ledger temp add "$OUT/" 2>"$D/root.err"; echo $? >"$D/root.code"
        tom-ledger temp add "$HOME" 2>"$D/home.err"; echo $? >"$D/home.code"
        tom-ledger temp add "$D/ok.tmp" "$D" 2>"$D/parent.err"; echo $? >"$D/parent.code"
        tom-ledger temp add "$TOM_LEDGER_DIR/" 2>"$D/ledger.err"; echo $? >"$D/ledger.code"
        tom-ledger --json status "$TOM_LEDGER_OPERATION" >"$D/status.json"
        exit 1"#;
    run_script(&env, &home, script).expect_code(1);

    let read = |name: &str| std::fs::read_to_string(env.path(name)).unwrap();
    for (case, says) in [
        (
            "root",
            "refusing temp resource `/`: it is the root directory".to_string(),
        ),
        (
            "home",
            format!(
                "refusing temp resource `{}`: it is or contains the home directory `{}`",
                home.display(),
                home.display()
            ),
        ),
        (
            "parent",
            format!("refusing temp resource `{}`", env.dir.path().display()),
        ),
        (
            "ledger",
            format!(
                "refusing temp resource `{}`: it is or contains the ledger directory",
                env.ledger.display()
            ),
        ),
    ] {
        assert_eq!(read(&format!("{case}.code")).trim(), "2", "{case}");
        let err = read(&format!("{case}.err"));
        assert_eq!(err.lines().count(), 1, "{case}: one line expected: {err:?}");
        assert!(err.contains(&says), "{case}: {err}");
    }
    let status: serde_json::Value = serde_json::from_str(&read("status.json")).unwrap();
    assert_eq!(
        status["temp_resources"],
        serde_json::json!([]),
        "nothing may be registered"
    );
    assert!(home_sentinel.exists());
    assert!(env.ledger.is_dir());
    env.assert_no_leftovers();
}

#[test]
fn forbidden_paths_in_a_ledger_file_are_refused_at_deletion_and_logged() {
    let env = Env::new();
    let home = env.path("home");
    let home_sentinel = sentinel_dir(&home);
    let ordinary = env.path("ordinary.tmp");
    std::fs::write(&ordinary, "registered by hand, deleted").unwrap();
    let mnt = env.path("mnt");
    let mounted = Tmpfs::mount(&mnt);
    if let Err(why) = &mounted {
        eprintln!("skipping the mount-point part: cannot mount a tmpfs: {why}");
    }
    let mount_sentinel = mounted.as_ref().ok().map(|_| sentinel_dir(&mnt));

    let mut planted = vec![
        home.clone(),
        env.dir.path().to_path_buf(),
        env.ledger.clone(),
        ordinary.clone(),
    ];
    if mounted.is_ok() {
        planted.push(mnt.clone());
    }
    let mut script = String::from("worker-plant-temp --marker \"$0\"");
    for p in &planted {
        script.push_str(&format!(" '{}'", p.display()));
    }
    run_script(&env, &home, &script).expect_code(1);

    assert!(home_sentinel.exists(), "the home directory was deleted");
    assert!(env.ledger.is_dir(), "the ledger directory was deleted");
    assert!(!ordinary.exists(), "the ordinary temp resource is deleted");
    let log = log_of(&env);
    let refused = |path: &Path, why: &str| {
        let line = format!("TEMP_REFUSED path={} reason={why}", path.display());
        assert!(log.contains(&line), "missing `{line}` in the log:\n{log}");
    };
    refused(
        &home,
        &format!("it is or contains the home directory `{}`", home.display()),
    );
    refused(&env.ledger, "it is or contains the ledger directory");
    refused(env.dir.path(), "it is or contains the");
    if let Some(sentinel) = mount_sentinel {
        assert!(sentinel.exists(), "the mounted file system was emptied");
        refused(&mnt, "it is a mount point");
    }
    drop(mounted);
    env.assert_no_leftovers();
}

#[test]
fn a_registered_symlink_is_removed_and_its_target_kept() {
    let env = Env::new();
    let home = env.path("home");
    std::fs::create_dir(&home).unwrap();
    let target_sentinel = sentinel_dir(&env.path("target"));
    std::os::unix::fs::symlink(env.path("target"), env.path("link")).unwrap();
    std::fs::create_dir(env.path("dir")).unwrap();
    std::fs::write(env.path("dir/own-file"), "deleted").unwrap();
    std::os::unix::fs::symlink(env.path("target"), env.path("dir/inner-link")).unwrap();

    let script = r#"tom-ledger temp add "$D/link/" "$D/dir" || exit 7; exit 1"#;
    run_script(&env, &home, script).expect_code(1);

    assert!(
        env.path("link").symlink_metadata().is_err(),
        "the link is removed"
    );
    assert!(!env.path("dir").exists(), "the directory is removed");
    assert!(target_sentinel.exists(), "the link's target was touched");
    env.assert_no_leftovers();
}

#[test]
fn a_mount_inside_a_registered_directory_is_left_alone() {
    let env = Env::new();
    let home = env.path("home");
    std::fs::create_dir(&home).unwrap();
    let reg = env.path("reg");
    std::fs::create_dir_all(reg.join("sub")).unwrap();
    std::fs::write(reg.join("own-file"), "deleted").unwrap();
    std::fs::write(reg.join("sub/own-file"), "deleted").unwrap();
    let mnt = reg.join("sub/mnt");
    let mounted = match Tmpfs::mount(&mnt) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipping: cannot mount a tmpfs: {why}");
            return;
        }
    };
    let sentinel = sentinel_dir(&mnt);

    let script = r#"tom-ledger temp add "$D/reg" || exit 7; exit 1"#;
    run_script(&env, &home, script).expect_code(1);

    assert!(sentinel.exists(), "the mount's content was deleted");
    assert!(!reg.join("own-file").exists());
    assert!(!reg.join("sub/own-file").exists());
    let log = log_of(&env);
    assert!(
        log.contains(&format!(
            "TEMP_MOUNTS_KEPT path={} mounts=[{}]",
            reg.display(),
            mnt.display()
        )),
        "{log}"
    );
    drop(mounted);
    env.assert_no_leftovers();
}

#[test]
fn a_non_utf8_path_is_stored_exactly_and_only_it_is_deleted() {
    let env = Env::new();
    let home = env.path("home");
    std::fs::create_dir(&home).unwrap();
    let mut raw = env.dir.path().as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/x\xffy");
    let registered = PathBuf::from(OsStr::from_bytes(&raw));
    let sibling = env.path("x\u{FFFD}y");
    std::fs::create_dir(&registered).unwrap();
    std::fs::write(registered.join("f"), "deleted").unwrap();
    let sibling_sentinel = sentinel_dir(&sibling);

    // While the operation runs, keep a copy of its ledger file.
    let script = r#"tom-ledger temp add "$X" || exit 7
        cp "$TOM_LEDGER_DIR/$TOM_LEDGER_OPERATION.operation.json" "$D/live.json"
        exit 1"#;
    run_with(&env, &home, script, &[("X", registered.as_os_str())]).expect_code(1);

    assert!(!registered.exists(), "the registered path survived");
    assert!(sibling_sentinel.exists(), "the lossy sibling was deleted");
    let text = std::fs::read(env.path("live.json")).unwrap();
    let live: serde_json::Value = serde_json::from_slice(&text).expect("valid JSON");
    let stored = live["tempResources"][0]["path"].as_str().unwrap();
    assert!(
        stored.starts_with(tom_dist_ledger::model::NON_UTF8_PREFIX),
        "{stored}"
    );
    assert_eq!(
        TempResource::decode_path(stored)
            .unwrap()
            .as_os_str()
            .as_bytes(),
        &raw[..],
        "the exact bytes round-trip"
    );
    // The stand-in in `path` names nothing a reader of the original could delete.
    assert!(std::fs::symlink_metadata(stored).is_err());
    // The archived file is valid JSON too.
    let op = only_operation(&env);
    let archived = env.ledger.join("backup").join(&op).join("operation.json");
    let bytes = std::fs::read(&archived).unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).expect("archived file is valid JSON");
    env.assert_no_leftovers();
}

#[test]
fn a_plan_temp_path_that_is_refused_stops_the_run_before_it_starts() {
    let env = Env::new();
    let home = env.path("home");
    let home_sentinel = sentinel_dir(&home);
    let extra = format!(
        "temp = [\"{}\", \"{}\"]",
        env.path("ok.tmp").display(),
        home.display()
    );
    let plan = plan(&env, &[worker(&env, "w", "touch $D/started", &extra)]);
    let mut cmd = env.cmd(&["run", "--plan", &plan]);
    cmd.env("HOME", &home);
    let out = run(cmd);
    out.expect_code(2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("refusing temp resource `{}`", home.display())),
        "{}",
        out.stderr
    );
    assert!(!env.path("started").exists(), "the worker ran");
    let ls = env.run(&["ls", "--json"]);
    ls.expect_code(0);
    assert!(
        ls.json().is_empty(),
        "an operation was created: {}",
        ls.stdout
    );
    assert!(home_sentinel.exists());
}
