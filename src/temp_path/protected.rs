//! What a temp path may never be: `/`, the home directory, a mount point, the ledger
//! directory or anything in it, or an ancestor of the home or ledger directory (deleting
//! it would delete them). Checked at registration and again, with fresh facts, right before deletion:
//! a path read back from a ledger is input, not proof.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::normalise::{is_plain_absolute, normalise};

/// Why a path is not deleted (or not registered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Relative, or with a `.` or `..` component: not a path we registered.
    NotNormalised,
    Root,
    /// The home directory, or a directory that contains it.
    Home(PathBuf),
    /// The ledger directory, or a directory that contains it.
    LedgerDir(PathBuf),
    /// Inside the ledger directory: the store's own files are never temp resources.
    InsideLedger(PathBuf),
    /// The root of a mounted file system (or bind mount).
    MountPoint,
    /// A directory on the way to the path is a symlink now (it was not at registration).
    ThroughSymlink(PathBuf),
    /// The stored form cannot be read back into a path.
    Unreadable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotNormalised => {
                write!(f, "it is not an absolute path without `.` and `..`")
            }
            Refusal::Root => write!(f, "it is the root directory"),
            Refusal::Home(h) => write!(f, "it is or contains the home directory `{}`", h.display()),
            Refusal::LedgerDir(d) => {
                write!(
                    f,
                    "it is or contains the ledger directory `{}`",
                    d.display()
                )
            }
            Refusal::InsideLedger(d) => {
                write!(f, "it is inside the ledger directory `{}`", d.display())
            }
            Refusal::MountPoint => write!(f, "it is a mount point"),
            Refusal::ThroughSymlink(p) => {
                write!(f, "`{}` on the way to it is a symlink", p.display())
            }
            Refusal::Unreadable(why) => write!(f, "{why}"),
        }
    }
}

/// The facts the refusal rules are checked against, read when it is built.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    homes: Vec<PathBuf>,
    ledger_dirs: Vec<PathBuf>,
    mounts: BTreeSet<PathBuf>,
}

impl Protected {
    /// The facts of now: `$HOME` and this user's home from the password database, the
    /// given ledger directories, the mount table of this process.
    pub fn new<'a>(ledger_dirs: impl IntoIterator<Item = &'a Path>) -> Protected {
        let mut homes = Vec::new();
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            homes.push(PathBuf::from(h));
        }
        if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
            homes.push(user.dir);
        }
        Protected {
            homes: spellings(homes),
            ledger_dirs: spellings(ledger_dirs.into_iter().map(Path::to_path_buf)),
            mounts: mount_points(),
        }
    }

    /// Ok when `path` may be deleted as a temp resource.
    pub fn check(&self, path: &Path) -> Result<(), Refusal> {
        if !is_plain_absolute(path) {
            return Err(Refusal::NotNormalised);
        }
        let Some(parent) = path.parent() else {
            return Err(Refusal::Root);
        };
        if let Some(h) = self.homes.iter().find(|h| h.starts_with(path)) {
            return Err(Refusal::Home(h.clone()));
        }
        if let Some(d) = self.ledger_dirs.iter().find(|d| d.starts_with(path)) {
            return Err(Refusal::LedgerDir(d.clone()));
        }
        if let Some(d) = self.ledger_dirs.iter().find(|d| path.starts_with(d)) {
            return Err(Refusal::InsideLedger(d.clone()));
        }
        if self.mounts.contains(path) {
            return Err(Refusal::MountPoint);
        }
        // A mount the table does not show (another namespace's view): its root sits on
        // another device than the directory holding it.
        if let (Ok(own), Ok(up)) = (
            std::fs::symlink_metadata(path),
            std::fs::symlink_metadata(parent),
        ) && own.is_dir()
            && own.dev() != up.dev()
        {
            return Err(Refusal::MountPoint);
        }
        Ok(())
    }

    /// Mount points strictly inside `dir`: deletion leaves them, and what is under them.
    pub fn mounts_inside(&self, dir: &Path) -> BTreeSet<PathBuf> {
        self.mounts
            .iter()
            .filter(|m| m.starts_with(dir) && m.as_path() != dir)
            .cloned()
            .collect()
    }

    #[cfg(test)]
    fn with(homes: &[&str], ledger_dirs: &[&str], mounts: &[&str]) -> Protected {
        Protected {
            homes: homes.iter().map(PathBuf::from).collect(),
            ledger_dirs: ledger_dirs.iter().map(PathBuf::from).collect(),
            mounts: mounts.iter().map(PathBuf::from).collect(),
        }
    }
}

/// Each directory as given (normalised) and as its real path, so a symlinked spelling of
/// either form is caught.
fn spellings(dirs: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        if let Ok(n) = normalise(&dir) {
            out.push(n);
        }
        if let Ok(real) = std::fs::canonicalize(&dir) {
            out.push(real);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Mount points of this process's mount namespace, from `/proc/self/mountinfo`.
fn mount_points() -> BTreeSet<PathBuf> {
    std::fs::read("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

/// The fifth field of each line, with the kernel's octal escapes (`\040` for a space)
/// undone.
fn parse_mountinfo(text: &[u8]) -> BTreeSet<PathBuf> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .collect()
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &Protected, path: &str) -> Option<Refusal> {
        p.check(Path::new(path)).err()
    }

    #[test]
    fn root_home_ledger_and_their_ancestors_are_refused() {
        let p = Protected::with(&["/home/ann"], &["/srv/proj/_ai/operation_ledger"], &[]);
        assert_eq!(refused(&p, "/"), Some(Refusal::Root));
        assert_eq!(
            refused(&p, "/home/ann"),
            Some(Refusal::Home("/home/ann".into()))
        );
        assert_eq!(
            refused(&p, "/home"),
            Some(Refusal::Home("/home/ann".into()))
        );
        for ancestor in [
            "/srv",
            "/srv/proj",
            "/srv/proj/_ai",
            "/srv/proj/_ai/operation_ledger",
        ] {
            assert!(
                matches!(refused(&p, ancestor), Some(Refusal::LedgerDir(_))),
                "{ancestor}"
            );
        }
        // Inside the home is fine; so are siblings sharing a name prefix.
        for ok in [
            "/home/ann/build.tmp",
            "/home/anna",
            "/srv/proj/out",
            "/srv/pro",
            "/srv/proj/_ai/operation_ledger2",
        ] {
            assert_eq!(refused(&p, ok), None, "{ok}");
        }
        // The ledger's own files are not temp resources.
        assert_eq!(
            refused(&p, "/srv/proj/_ai/operation_ledger/op.operation.json"),
            Some(Refusal::InsideLedger(
                "/srv/proj/_ai/operation_ledger".into()
            ))
        );
    }

    #[test]
    fn mount_points_and_unnormalised_paths_are_refused() {
        let p = Protected::with(&[], &[], &["/mnt/data", "/"]);
        assert_eq!(refused(&p, "/mnt/data"), Some(Refusal::MountPoint));
        assert_eq!(refused(&p, "/mnt/data/x"), None);
        for bad in ["relative", "/a/../b", "/a/./b", "/a/.."] {
            assert_eq!(refused(&p, bad), Some(Refusal::NotNormalised), "{bad}");
        }
        assert_eq!(
            p.mounts_inside(Path::new("/mnt")),
            BTreeSet::from([PathBuf::from("/mnt/data")])
        );
    }

    #[test]
    fn the_real_mount_table_is_read() {
        let p = Protected::new([]);
        assert_eq!(refused(&p, "/proc"), Some(Refusal::MountPoint));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        let text =
            b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
            37 35 98:0 / / rw - ext4 /dev/sda rw\n";
        let mounts = parse_mountinfo(text);
        assert!(mounts.contains(Path::new("/mnt/with space")));
        assert!(mounts.contains(Path::new("/")));
    }

    #[test]
    fn messages_name_the_protected_directory() {
        let p = Protected::with(&["/home/ann"], &[], &[]);
        let r = refused(&p, "/home").unwrap().to_string();
        assert_eq!(r, "it is or contains the home directory `/home/ann`");
    }
}
