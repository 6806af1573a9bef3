//! The one form a temp path is registered in: absolute, no `.`/`..`, no duplicate or
//! trailing slash, no symlink before the last component.
//!
//! `..` is taken as the kernel takes it: the parent of the directory reached so far, after
//! following symlinks (`link/..` is the parent of the link's target, not the directory
//! holding the link). To get there, every prefix that exists is resolved to its real path
//! before the next component is added; the part that does not exist yet (a path registered
//! before it is created) is taken lexically. The last component is never resolved: a
//! registered symlink stays the link, and deleting it removes the link, not its target.
//! A trailing slash is dropped for the same reason (`link/` names the link).
//!
//! Because the stored path has no symlink before its last component, deletion can walk it
//! without following any symlink: one that appears later makes the deletion refuse.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// `path` in its registered form, relative paths taken against the current directory.
pub fn normalise(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid("temp resource path ``", "it is empty"));
    }
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::io("read the current directory for", path, e))?;
        cwd.join(path)
    };
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out = resolved(out);
                out.pop();
            }
            Component::Normal(name) => {
                out = resolved(out);
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// The real path of `dir` when it exists, else `dir` as it is.
fn resolved(dir: PathBuf) -> PathBuf {
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// Whether `path` is already in registered form as far as its text goes: absolute, with
/// no `.` or `..` component. (Deletion refuses any other stored path.)
pub fn is_plain_absolute(path: &Path) -> bool {
    // `Path::components` drops interior `.` components; look at the raw bytes.
    path.is_absolute()
        && !path
            .as_os_str()
            .as_encoded_bytes()
            .split(|b| *b == b'/')
            .any(|part| part == b"." || part == b"..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        (dir, real)
    }

    #[test]
    fn dots_duplicate_and_trailing_slashes() {
        let (_keep, d) = scratch();
        std::fs::create_dir(d.join("a")).unwrap();
        let text = format!("{}//a/./b/../c/", d.display());
        assert_eq!(normalise(Path::new(&text)).unwrap(), d.join("a/c"));
        assert_eq!(normalise(Path::new("/")).unwrap(), Path::new("/"));
        assert_eq!(normalise(Path::new("/..")).unwrap(), Path::new("/"));
        assert_eq!(normalise(Path::new("//./")).unwrap(), Path::new("/"));
    }

    #[test]
    fn relative_paths_are_taken_against_the_current_directory() {
        let cwd = std::fs::canonicalize(std::env::current_dir().unwrap()).unwrap();
        assert_eq!(
            normalise(Path::new("no-such-thing/x")).unwrap(),
            cwd.join("no-such-thing/x")
        );
    }

    #[test]
    fn parent_of_a_symlink_is_the_parent_of_its_target() {
        let (_keep, d) = scratch();
        std::fs::create_dir_all(d.join("real/inner")).unwrap();
        std::os::unix::fs::symlink(d.join("real/inner"), d.join("link")).unwrap();
        // The kernel's `link/..` is `real`, not `d`.
        assert_eq!(normalise(&d.join("link/../x")).unwrap(), d.join("real/x"));
        // A symlink before the last component is resolved...
        assert_eq!(
            normalise(&d.join("link/f")).unwrap(),
            d.join("real/inner/f")
        );
        // ...the last component is kept as the link, with or without a trailing slash.
        assert_eq!(normalise(&d.join("link")).unwrap(), d.join("link"));
        let slash = format!("{}/link/", d.display());
        assert_eq!(normalise(Path::new(&slash)).unwrap(), d.join("link"));
    }

    #[test]
    fn missing_parts_are_taken_lexically_and_bytes_kept() {
        let (_keep, d) = scratch();
        let raw = d.join(OsStr::from_bytes(b"new/x\xffy/../z\xfe"));
        assert_eq!(
            normalise(&raw).unwrap(),
            d.join(OsStr::from_bytes(b"new/z\xfe"))
        );
    }

    #[test]
    fn empty_is_refused() {
        let e = normalise(Path::new("")).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn plain_absolute() {
        assert!(is_plain_absolute(Path::new("/a/b")));
        assert!(is_plain_absolute(Path::new("/")));
        assert!(!is_plain_absolute(Path::new("a/b")));
        assert!(!is_plain_absolute(Path::new("/a/../b")));
        assert!(!is_plain_absolute(Path::new("/a/./b")));
        assert!(!is_plain_absolute(Path::new("/a/.")));
    }
}
