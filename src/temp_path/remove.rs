//! Deleting a temp resource: the one function every deletion site calls.
//!
//! The path is walked from `/` one directory descriptor at a time, each opened with
//! `O_NOFOLLOW`, so no symlink on the way is followed (the registered form has none; one
//! that appears later is a refusal). The last component is looked at without following it:
//! a symlink is unlinked, never its target. A directory is emptied through descriptors
//! too (`openat` + `unlinkat`), each subdirectory opened with `O_NOFOLLOW` and checked to
//! be the same inode that was listed, so swapping a directory for a symlink while the
//! deletion runs cannot redirect it. Nothing on another device, and no mount point from
//! the mount table, is entered: a mount inside a registered directory is left alone with
//! what is under it.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::protected::{Protected, Refusal};
use crate::model::TempResource;

/// What deleting a temp resource did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Deleted except these mount points inside it, left with their content.
    RemovedExceptMounts(Vec<PathBuf>),
    /// There was nothing at the path.
    NotFound,
    /// Not touched: the path is protected or no longer what was registered.
    Refused(Refusal),
    /// Deletion started and hit an error (the first one, and how many there were).
    Failed {
        error: String,
        count: usize,
    },
}

impl Removal {
    /// Whether the deletion did all it may: nothing was there, or everything but the
    /// mounts inside is gone.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Removal::Removed | Removal::RemovedExceptMounts(_) | Removal::NotFound
        )
    }

    /// The operation-log line that reports this outcome; `None` for a plain deletion.
    pub fn report(&self, path: &Path) -> Option<String> {
        let shown = path.display();
        match self {
            Removal::Removed | Removal::NotFound => None,
            Removal::RemovedExceptMounts(kept) => Some(format!(
                "TEMP_MOUNTS_KEPT path={shown} mounts=[{}]",
                kept.iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Removal::Refused(why) => Some(format!("TEMP_REFUSED path={shown} reason={why}")),
            Removal::Failed { error, count } => Some(format!(
                "TEMP_NOT_DELETED path={shown} errors={count} first={error}"
            )),
        }
    }
}

/// Delete a temp resource in its stored form (see [`TempResource`]).
pub fn remove_stored(stored: &str, protected: &Protected) -> (PathBuf, Removal) {
    match TempResource::decode_path(stored) {
        Ok(path) => {
            let outcome = remove(&path, protected);
            (path, outcome)
        }
        Err(e) => (
            PathBuf::from(stored),
            Removal::Refused(Refusal::Unreadable(e.to_string())),
        ),
    }
}

/// Delete `path` (a file, a symlink, or a directory with its content) unless the refusal
/// rules forbid it. Missing is fine.
pub fn remove(path: &Path, protected: &Protected) -> Removal {
    if let Err(why) = protected.check(path) {
        return Removal::Refused(why);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Removal::Refused(Refusal::Root);
    };
    let parent_fd = match open_path_nofollow(parent) {
        Ok(fd) => fd,
        Err(Walk::Missing) => return Removal::NotFound,
        Err(Walk::Symlink(at)) => return Removal::Refused(Refusal::ThroughSymlink(at)),
        Err(Walk::Error(e)) => return failed(parent, e),
    };
    let Ok(name) = CString::new(name.as_bytes()) else {
        return Removal::Refused(Refusal::NotNormalised);
    };
    let parent_stat = match fstat(&parent_fd) {
        Ok(s) => s,
        Err(e) => return failed(parent, e),
    };
    let own = match fstatat(
        &parent_fd,
        name.as_c_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(s) => s,
        Err(Errno::ENOENT) => return Removal::NotFound,
        Err(e) => return failed(path, e),
    };
    if !is_dir(&own) {
        return match unlinkat(&parent_fd, name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Removal::Removed,
            Err(Errno::ENOENT) => Removal::NotFound,
            Err(e) => failed(path, e),
        };
    }
    if own.st_dev != parent_stat.st_dev {
        return Removal::Refused(Refusal::MountPoint);
    }
    let mut tree = Tree {
        dev: own.st_dev,
        mounts: protected.mounts_inside(path),
        kept: Vec::new(),
        errors: Vec::new(),
    };
    match open_dir_checked(&parent_fd, &name, &own) {
        Ok(fd) => tree.empty(&fd, path),
        Err(e) => tree.errors.push(format!("{}: {e}", path.display())),
    }
    if tree.kept.is_empty() && tree.errors.is_empty() {
        match unlinkat(&parent_fd, name.as_c_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => tree.errors.push(format!("{}: {e}", path.display())),
        }
    }
    if let Some(first) = tree.errors.first() {
        Removal::Failed {
            error: first.clone(),
            count: tree.errors.len(),
        }
    } else if tree.kept.is_empty() {
        Removal::Removed
    } else {
        Removal::RemovedExceptMounts(tree.kept)
    }
}

fn failed(path: &Path, e: Errno) -> Removal {
    Removal::Failed {
        error: format!("{}: {e}", path.display()),
        count: 1,
    }
}

enum Walk {
    Missing,
    Symlink(PathBuf),
    Error(Errno),
}

/// A descriptor of directory `dir`, reached from `/` without following any symlink.
fn open_path_nofollow(dir: &Path) -> Result<OwnedFd, Walk> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = openat(AT_FDCWD, "/", flags, Mode::empty()).map_err(Walk::Error)?;
    let mut reached = PathBuf::from("/");
    for component in dir.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        reached.push(name);
        let next = match openat(&fd, name, flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) => return Err(Walk::Missing),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                // A symlink (refused) or a file where a directory should be (nothing
                // can be under it).
                let st = fstatat(&fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
                return Err(match st {
                    Ok(s) if file_type(&s) == SFlag::S_IFLNK => Walk::Symlink(reached),
                    _ => Walk::Missing,
                });
            }
            Err(e) => return Err(Walk::Error(e)),
        };
        fd = next;
    }
    Ok(fd)
}

/// Open subdirectory `name` of `dir` for listing, refusing anything but the directory
/// that `expected` describes (it may have been swapped since it was looked at).
fn open_dir_checked(dir: &impl AsFd, name: &CStr, expected: &FileStat) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty())?;
    let st = fstat(&fd)?;
    if st.st_dev != expected.st_dev || st.st_ino != expected.st_ino {
        return Err(Errno::ESTALE);
    }
    Ok(fd)
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn is_dir(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFDIR
}

/// One directory tree being emptied.
struct Tree {
    /// The device of the registered directory: nothing on another one is touched.
    dev: u64,
    mounts: BTreeSet<PathBuf>,
    kept: Vec<PathBuf>,
    errors: Vec<String>,
}

impl Tree {
    /// Delete everything in `dir` (known as `path`) except mounts.
    fn empty(&mut self, dir: &OwnedFd, path: &Path) {
        let names = match entry_names(dir) {
            Ok(names) => names,
            Err(e) => {
                self.errors.push(format!("{}: {e}", path.display()));
                return;
            }
        };
        for name in names {
            let child = path.join(OsStr::from_bytes(name.as_bytes()));
            let st = match fstatat(
                dir,
                name.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    self.errors.push(format!("{}: {e}", child.display()));
                    continue;
                }
            };
            if st.st_dev != self.dev || self.mounts.contains(&child) {
                self.kept.push(child);
                continue;
            }
            let result = if is_dir(&st) {
                let kept_before = self.kept.len();
                match open_dir_checked(dir, &name, &st) {
                    Ok(fd) => self.empty(&fd, &child),
                    Err(e) => {
                        self.errors.push(format!("{}: {e}", child.display()));
                        continue;
                    }
                }
                if self.kept.len() > kept_before {
                    continue; // it still holds a mount
                }
                unlinkat(dir, name.as_c_str(), UnlinkatFlags::RemoveDir)
            } else {
                unlinkat(dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir)
            };
            match result {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => self.errors.push(format!("{}: {e}", child.display())),
            }
        }
    }
}

/// The names in a directory, without `.` and `..`.
fn entry_names(dir: &OwnedFd) -> nix::Result<Vec<CString>> {
    let listing = nix::dir::Dir::from_fd(dir.try_clone().map_err(|_| Errno::EMFILE)?)?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        (dir, real)
    }

    fn guard() -> Protected {
        Protected::new([])
    }

    #[test]
    fn files_trees_and_missing_paths() {
        let (_keep, d) = scratch();
        std::fs::write(d.join("f"), "x").unwrap();
        assert_eq!(remove(&d.join("f"), &guard()), Removal::Removed);
        assert!(!d.join("f").exists());
        std::fs::create_dir_all(d.join("t/a/b")).unwrap();
        std::fs::write(d.join("t/a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.join("t/a/dangling")).unwrap();
        assert_eq!(remove(&d.join("t"), &guard()), Removal::Removed);
        assert!(!d.join("t").exists());
        assert_eq!(remove(&d.join("t"), &guard()), Removal::NotFound);
        assert_eq!(remove(&d.join("no/such/dir"), &guard()), Removal::NotFound);
    }

    #[test]
    fn a_symlink_is_removed_not_its_target() {
        let (_keep, d) = scratch();
        std::fs::create_dir(d.join("target")).unwrap();
        std::fs::write(d.join("target/keep"), "x").unwrap();
        std::os::unix::fs::symlink(d.join("target"), d.join("link")).unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::os::unix::fs::symlink(d.join("target"), d.join("dir/inner-link")).unwrap();
        assert_eq!(remove(&d.join("link"), &guard()), Removal::Removed);
        assert_eq!(remove(&d.join("dir"), &guard()), Removal::Removed);
        assert!(d.join("link").symlink_metadata().is_err());
        assert!(!d.join("dir").exists());
        assert!(d.join("target/keep").exists(), "the target was touched");
    }

    #[test]
    fn a_symlink_on_the_way_is_refused() {
        let (_keep, d) = scratch();
        std::fs::create_dir(d.join("target")).unwrap();
        std::fs::write(d.join("target/keep"), "x").unwrap();
        std::os::unix::fs::symlink(d.join("target"), d.join("link")).unwrap();
        assert_eq!(
            remove(&d.join("link/keep"), &guard()),
            Removal::Refused(Refusal::ThroughSymlink(d.join("link")))
        );
        assert!(d.join("target/keep").exists());
    }

    #[test]
    fn a_directory_swapped_after_it_was_listed_is_not_entered() {
        let (_keep, d) = scratch();
        std::fs::create_dir_all(d.join("listed")).unwrap();
        std::fs::create_dir_all(d.join("other")).unwrap();
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let parent = openat(AT_FDCWD, &d, flags, Mode::empty()).unwrap();
        let nofollow = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        let listed = fstatat(&parent, "listed", nofollow).unwrap();
        // Another directory now sits under the listed name.
        std::fs::rename(d.join("listed"), d.join("moved")).unwrap();
        std::fs::rename(d.join("other"), d.join("listed")).unwrap();
        assert_eq!(
            open_dir_checked(&parent, c"listed", &listed).unwrap_err(),
            Errno::ESTALE
        );
        // A symlink to the listed directory now sits under its name: not followed.
        std::fs::remove_dir(d.join("listed")).unwrap();
        std::os::unix::fs::symlink(d.join("moved"), d.join("listed")).unwrap();
        assert!(open_dir_checked(&parent, c"listed", &listed).is_err());
    }

    #[test]
    fn a_file_on_the_way_means_nothing_is_there() {
        let (_keep, d) = scratch();
        std::fs::write(d.join("f"), "x").unwrap();
        assert_eq!(remove(&d.join("f/x"), &guard()), Removal::NotFound);
        assert!(d.join("f").exists());
    }

    #[test]
    fn refusals_touch_nothing_and_say_why() {
        let (_keep, d) = scratch();
        std::fs::create_dir(d.join("ledger")).unwrap();
        std::fs::write(d.join("ledger/op.json"), "{}").unwrap();
        let protected = Protected::new([d.join("ledger").as_path()]);
        let outcome = remove(&d, &protected);
        assert!(
            matches!(outcome, Removal::Refused(Refusal::LedgerDir(_))),
            "{outcome:?}"
        );
        assert!(d.join("ledger/op.json").exists());
        let line = outcome.report(&d).unwrap();
        assert!(line.starts_with("TEMP_REFUSED path="), "{line}");
        assert!(line.contains("ledger directory"), "{line}");
        assert_eq!(
            remove_stored(&format!("{}zz", crate::model::NON_UTF8_PREFIX), &protected).1,
            Removal::Refused(Refusal::Unreadable(format!(
                "temp resource `{}zz`: not valid hex",
                crate::model::NON_UTF8_PREFIX
            )))
        );
    }
}
