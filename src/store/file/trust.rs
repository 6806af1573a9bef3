//! What the store accepts in its directory: only what it could have made itself.
//!
//! The ledger directory is input (a cloned repository or an unpacked tarball may bring
//! one along), so nothing in it is taken on trust:
//! - the directory itself must belong to this user and be writable by nobody else, or
//!   anyone could have planted or swapped its entries;
//! - every file is opened with `O_NOFOLLOW` (a symlink is refused, never written or read
//!   through) and `O_NONBLOCK` (a planted fifo cannot hang the open), then checked with
//!   `fstat`: only regular files, and for anything written, only this user's;
//! - subdirectories the store writes into (`backup/`, an archive, a trail) must be real
//!   directories of this user, checked without following a symlink before they are used.

use std::fs::{self, File, FileType, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::io::create_private_dir;
use crate::error::{Error, Result};

/// Whose files the caller accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Only this user's: the file is written (or its lock decides who writes).
    Me,
    /// Anyone's: the file is only read.
    Anyone,
}

/// The effective uid of this process: the owner of everything the store creates. Read
/// once: it is asked on every file the store opens.
pub fn my_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| nix::unistd::geteuid().as_raw())
}

/// Refuse a ledger directory that another user owns or that group or others can write.
pub fn check_ledger_dir(base: &Path) -> Result<()> {
    let meta = fs::metadata(base).map_err(|e| Error::io("stat", base, e))?;
    let shown = shell_word(base);
    let refuse = |problem: String, fix: String| {
        Err(Error::UntrustedLedgerDir {
            path: base.to_path_buf(),
            problem,
            fix,
        })
    };
    if !meta.is_dir() {
        return refuse(
            format!("is {}", describe(meta.file_type())),
            "choose another ledger directory".to_string(),
        );
    }
    let me = my_uid();
    if meta.uid() != me {
        return refuse(
            format!("is owned by uid {}, not by you (uid {me})", meta.uid()),
            format!("run `chown {me} {shown}` or use a ledger directory of your own"),
        );
    }
    let mode = meta.mode() & 0o7777;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "group",
        (false, true) => "others",
        (true, true) => "group and others",
    };
    // A sticky directory (`/tmp`) is shared on purpose: it is not to be made private.
    let fix = if mode & 0o1000 != 0 {
        "use a ledger directory of your own".to_string()
    } else {
        format!("run `chmod 700 {shown}`")
    };
    refuse(format!("is writable by {writers} (mode {mode:04o})"), fix)
}

/// Open the ledger file `path` with `options` (plus `flags`), refusing a symlink and
/// anything but a regular file, and with [`Owner::Me`] another user's file. Returns the
/// file and its `fstat`. Open errors are [`Error::Io`] carrying the OS error.
pub fn open_entry(
    options: &mut OpenOptions,
    path: &Path,
    flags: i32,
    owner: Owner,
    action: &'static str,
) -> Result<(File, Metadata)> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | flags)
        .open(path)
        .map_err(|e| open_error(path, action, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(untrusted("ledger file", path, describe(meta.file_type())));
    }
    if owner == Owner::Me && meta.uid() != my_uid() {
        return Err(untrusted(
            "ledger file",
            path,
            format!("owned by uid {}", meta.uid()),
        ));
    }
    Ok((file, meta))
}

/// `ELOOP` from an `O_NOFOLLOW` open means the last component is a symlink.
fn open_error(path: &Path, action: &'static str, e: std::io::Error) -> Error {
    let symlink = e.raw_os_error() == Some(libc::ELOOP)
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if symlink {
        untrusted("ledger file", path, "a symlink")
    } else {
        Error::io(action, path, e)
    }
}

/// Make sure `path` is a real directory of this user, creating it (private) if missing.
/// `what` names it in the error (`archive directory`, `trail directory`).
pub fn ensure_private_dir(path: &Path, what: &'static str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) => check_dir(path, &meta, what),
        Err(e) if e.kind() == ErrorKind::NotFound => create_private_dir(path),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Refuse `path` if it exists and is not a real directory of this user.
pub fn check_dir_if_present(path: &Path, what: &'static str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) => check_dir(path, &meta, what),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Refuse `path` (with its `lstat`) unless it is a directory of this user.
pub fn check_dir(path: &Path, meta: &Metadata, what: &'static str) -> Result<()> {
    if !meta.is_dir() {
        return Err(untrusted(what, path, describe(meta.file_type())));
    }
    if meta.uid() != my_uid() {
        return Err(untrusted(
            what,
            path,
            format!("owned by uid {}", meta.uid()),
        ));
    }
    Ok(())
}

/// True when `path` is a real directory of this user (not a symlink to one).
pub fn is_own_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.uid() == my_uid())
}

/// True when something (a symlink included) has the name `path`.
pub fn present(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn untrusted(what: &'static str, path: &Path, found: impl Into<String>) -> Error {
    Error::UntrustedEntry {
        what,
        path: path.to_path_buf(),
        found: found.into(),
    }
}

fn describe(t: FileType) -> &'static str {
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// `path` as one shell word, for the fix printed in an error.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b));
    if plain && !text.is_empty() {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word(Path::new("/a/b_c-1.d")), "/a/b_c-1.d");
        assert_eq!(shell_word(Path::new("/a b")), "'/a b'");
        assert_eq!(shell_word(Path::new("/it's")), r"'/it'\''s'");
    }
}
