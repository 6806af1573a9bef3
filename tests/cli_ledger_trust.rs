//! `tom-ledger` on a ledger directory it cannot trust: refused with exit 2, one line that
//! says how to fix it, nothing run and nothing changed; and a project's own `backup/`
//! next to a `--ledger .` ledger survives archiving.

mod cli_common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cli_common::{Env, Out, assert_same, snapshot};

/// A uid no file of the test machine belongs to (`nobody`).
const OTHER_UID: u32 = 65534;

fn assert_refused(out: &Out, what: &str, expected: &str) {
    assert_eq!(
        out.code(),
        2,
        "{what}: stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{what}: {:?}", out.stdout);
    let line = out.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{what}: {:?}", out.stderr);
    assert!(line.starts_with("tom-ledger: error: "), "{what}: {line}");
    assert!(
        line.contains(expected),
        "{what}: {line:?} lacks {expected:?}"
    );
}

/// `ls` and `run` on the ledger are refused and leave it (and its mode and owner) as it
/// was; the command of `run` never starts.
fn assert_ledger_refused(env: &Env, expected: &str) {
    let before = env.ledger_snapshot();
    let meta = fs::metadata(&env.ledger).unwrap();
    assert_refused(&env.run(&["ls"]), "ls", expected);
    let ran = env.path("ran");
    let out = env.run(&["run", "--", "sh", "-c", "touch \"$D/ran\"", &env.marker]);
    assert_refused(&out, "run", expected);
    assert!(!ran.exists(), "run started its command");
    assert_same(
        &before,
        &env.ledger_snapshot(),
        "the refusal changed the ledger",
    );
    let after = fs::metadata(&env.ledger).unwrap();
    assert_eq!(after.mode(), meta.mode());
    assert_eq!(after.uid(), meta.uid());
    env.assert_no_leftovers();
}

/// An existing ledger with one archived operation in it.
fn env_with_ledger() -> Env {
    let env = Env::new();
    env.run(&["run", "--", "true"]).expect_code(0);
    env
}

#[test]
fn a_ledger_directory_writable_by_group_or_others_is_refused() {
    for (mode, writers) in [(0o777, "group and others"), (0o770, "group")] {
        let env = env_with_ledger();
        fs::set_permissions(&env.ledger, fs::Permissions::from_mode(mode)).unwrap();
        let expected = format!(
            "ledger directory `{0}` is writable by {writers} (mode {mode:04o}): run `chmod 700 {0}`",
            env.ledger.display()
        );
        assert_ledger_refused(&env, &expected);
    }
}

#[test]
fn a_ledger_directory_of_another_user_is_refused() {
    let env = env_with_ledger();
    std::os::unix::fs::chown(&env.ledger, Some(OTHER_UID), None).unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let expected = format!(
        "ledger directory `{0}` is owned by uid {OTHER_UID}, not by you (uid {me}): run `chown {me} {0}`",
        env.ledger.display()
    );
    assert_ledger_refused(&env, &expected);
}

#[test]
fn a_symlinked_backup_is_refused_and_its_target_untouched() {
    let env = env_with_ledger();
    let elsewhere = env.path("elsewhere");
    for n in 1..=3 {
        let dir = elsewhere.join(format!("old-{n}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keep.txt"), "sentinel").unwrap();
    }
    let backup = env.ledger.join("backup");
    fs::rename(&backup, env.path("backup-moved")).unwrap();
    symlink(&elsewhere, &backup).unwrap();
    let target_before = snapshot(&elsewhere);
    let expected = format!(
        "refusing archive directory `{}`: it is a symlink",
        backup.display()
    );
    assert_ledger_refused(&env, &expected);
    assert_same(
        &target_before,
        &snapshot(&elsewhere),
        "the symlink's target changed",
    );
}

fn set_mtime(path: &Path, secs_since_epoch: u64) {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(secs_since_epoch);
    fs::File::open(path).unwrap().set_modified(when).unwrap();
}

/// `--ledger .` in a project with 25 photo directories in its own `backup/` (older than
/// any archive, more than the 20 archives kept): runs archive next to them and every photo
/// directory stays whole.
#[test]
fn a_project_backup_directory_survives_runs_with_ledger_dot() {
    let env = Env::new();
    let backup = env.path("backup");
    let photos: Vec<PathBuf> = (2001..=2025)
        .map(|year| {
            let dir = backup.join(format!("photos-{year}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("img.jpg"), format!("photo {year}")).unwrap();
            set_mtime(&dir, 100_000_000 + year);
            dir
        })
        .collect();
    let before = snapshot(&backup);
    for _ in 0..2 {
        let mut cmd = env.bare(&["--ledger", ".", "run", "--", "true"]);
        cmd.current_dir(env.dir.path());
        cli_common::run(cmd).expect_code(0);
    }
    let after = snapshot(&backup);
    for (path, content) in &before {
        assert_eq!(after.get(path), Some(content), "{} changed", path.display());
    }
    for dir in &photos {
        assert!(dir.join("img.jpg").is_file(), "{}", dir.display());
    }
    let archives = fs::read_dir(&backup).unwrap().count() - photos.len();
    assert_eq!(archives, 2, "both runs archived next to the photos");
}
