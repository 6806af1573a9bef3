//! Small file-system helpers shared by the file store: private files and directories
//! whose modes do not depend on the umask, and directory syncs for `durable`.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::trust::{self, Owner, open_entry};
use crate::error::{Error, Result};

/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the store creates.
pub const DIR_MODE: u32 = 0o700;

/// Create `path` (one level; the parent must exist) as a private directory. An existing
/// directory of this user is left as it is; a symlink or anything else is refused.
pub fn create_private_dir(path: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io("set permissions of", path, e)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
            trust::check_dir(path, &meta, "directory")
        }
        Err(e) => Err(Error::io("create directory", path, e)),
    }
}

/// Create `path` and any missing parents; the directories created are private.
pub fn create_private_dir_all(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    create_private_dir(path)
}

/// Open `options` on `path`, making a file it creates private whatever the umask. The
/// umask can only be read by changing it (racing with other threads), so the mode is
/// checked after the fact; `fchmod` only when it is off, since it costs a journal entry.
/// Only a regular file of this user is accepted, never through a symlink (see `trust.rs`).
pub fn open_private(options: &mut OpenOptions, path: &Path, action: &'static str) -> Result<File> {
    let (file, meta) = open_entry(options.mode(FILE_MODE), path, 0, Owner::Me, action)?;
    let mode = meta.permissions().mode();
    if mode & 0o7777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|e| Error::io("set permissions of", path, e))?;
    }
    Ok(file)
}

/// What a file is written with: the content streamed into a writer (a large operation
/// is serialised straight into its file, never held whole in memory).
pub type Content<'a> = &'a dyn Fn(&mut dyn Write) -> std::io::Result<()>;

/// Bytes written per system call when content is streamed.
const WRITE_BUFFER: usize = 64 * 1024;

/// Create `path` as a new private file holding `bytes` (synced with `durable`). A file
/// already there was left by a writer that died: it is removed, never written through,
/// since it may share its inode with a live file (a hard link made by that writer).
pub fn write_private(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    write_private_with(path, &|out| out.write_all(bytes), durable)
}

/// [`write_private`] with the content streamed in.
pub fn write_private_with(path: &Path, content: Content<'_>, durable: bool) -> Result<()> {
    let create = || {
        open_private(
            OpenOptions::new().write(true).create_new(true),
            path,
            "create",
        )
    };
    let file = match create() {
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
            fs::remove_file(path).map_err(|e| Error::io("remove leftover", path, e))?;
            create()?
        }
        other => other?,
    };
    stream_into(&file, content).map_err(|e| Error::io("write", path, e))?;
    if durable {
        file.sync_all().map_err(|e| Error::io("sync", path, e))?;
    }
    Ok(())
}

/// Write `content` from the file's current position on, buffered; returns where it ends.
fn stream_into(file: &File, content: Content<'_>) -> std::io::Result<u64> {
    use std::io::Seek;
    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    content(&mut out)?;
    out.flush()?;
    drop(out);
    let mut file = file;
    file.stream_position()
}

/// Swap the files at `a` and `b` in one step (`renameat2` with `RENAME_EXCHANGE`): whoever
/// opens either path gets one of the two files, never none.
#[cfg(target_os = "linux")]
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are NUL-terminated strings that outlive the call, which only
    // reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(ErrorKind::Unsupported.into())
}

/// True when the file system (or kernel) cannot [`exchange`].
pub fn exchange_unsupported(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        )
}

/// The whole file, read without updating its access time: every write makes a new
/// inode, whose first read would otherwise cost a journal entry (with `relatime`).
/// `O_NOATIME` is refused for files of other users; those are read plainly. Only a regular
/// file is read, never through a symlink (see `trust.rs`).
///
/// The reader holds a shared `flock` on the inode while it reads: a writer recycles an old
/// trail inode as its next staging file only if it can lock it exclusively, so a reader
/// that opened a file long ago and is still reading never sees it overwritten. A reader
/// that finds the inode locked exclusively has opened a file being recycled (no longer
/// the current one) and opens the path again.
pub fn read_whole(path: &Path) -> Result<Vec<u8>> {
    read_locked(path, None)
}

/// At most the first `limit` bytes of the file, read as [`read_whole`] reads it.
pub fn read_head(path: &Path, limit: usize) -> Result<Vec<u8>> {
    read_locked(path, Some(limit))
}

fn read_locked(path: &Path, limit: Option<usize>) -> Result<Vec<u8>> {
    let open = |flags| {
        open_entry(
            OpenOptions::new().read(true),
            path,
            flags,
            Owner::Anyone,
            "read",
        )
    };
    for _ in 0..RECYCLED_RETRIES {
        let (file, meta) = match open(libc::O_NOATIME) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => open(0)?,
            other => other?,
        };
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
        let _unlock = Unlock(&file);
        // The size is known from the open's `fstat`: read with plain `read`s into a
        // buffer of that size (`read_to_end` would `fstat` and `lseek` again).
        let expected = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let size = limit.map_or(expected, |l| l.min(expected));
        return read_up_to(&file, size, limit).map_err(|e| Error::io("read", path, e));
    }
    Err(Error::io(
        "read",
        path,
        std::io::Error::new(
            ErrorKind::WouldBlock,
            "the file kept being replaced while it was opened",
        ),
    ))
}

/// Read `file` to its end (or to `limit` bytes), expecting about `size` bytes: one
/// `read` for a file that did not grow, one more that returns 0.
fn read_up_to(mut file: &File, size: usize, limit: Option<usize>) -> std::io::Result<Vec<u8>> {
    let max = limit.unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; size.saturating_add(1).min(max)];
    let mut filled = 0;
    while filled < max {
        if filled == bytes.len() {
            let grown = bytes.len().saturating_mul(2).clamp(64, max);
            bytes.resize(grown, 0);
        }
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// How often a reader opens the path again when it caught an inode being recycled.
const RECYCLED_RETRIES: usize = 1000;

/// Turn the old file at `old` into the staging file `staging` holding `content`, without
/// creating an inode (which costs more than the rest of a write on some disks). Only when
/// no reader holds it (an exclusive `flock` taken without waiting) and it has one name
/// (so it is not also the current operation file, nor linked to it); `Ok(false)` when
/// it cannot be recycled. Never
/// through a symlink, and only a regular file of this user: an entry replaced by anything
/// else is left to pruning, which unlinks the name and never touches a target.
pub fn recycle_into(
    old: &Path,
    staging: &Path,
    content: Content<'_>,
    durable: bool,
) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let Ok((file, meta)) = open_entry(
        OpenOptions::new().write(true),
        old,
        libc::O_NOATIME,
        Owner::Me,
        "recycle",
    ) else {
        return Ok(false);
    };
    if file.try_lock().is_err() {
        return Ok(false);
    }
    let _unlock = Unlock(&file);
    if meta.nlink() != 1 {
        return Ok(false);
    }
    // Under the exclusive lock: take the name first, then the content.
    if let Err(e) = fs::rename(old, staging) {
        if e.kind() == ErrorKind::NotFound {
            return Ok(false);
        }
        return Err(Error::io("recycle", old, e));
    }
    // The name moved must be the file held (the directory is ours alone, so this only
    // fails if something is badly wrong): never write under a name that is another file.
    let moved = fs::symlink_metadata(staging).map_err(|e| Error::io("stat", staging, e))?;
    if moved.ino() != meta.ino() || moved.dev() != meta.dev() {
        return Err(Error::UntrustedEntry {
            what: "trail entry",
            path: old.to_path_buf(),
            found: "no longer the file that was opened".to_string(),
        });
    }
    // Opened just now: written from its start, then cut where the new content ends.
    stream_into(&file, content)
        .and_then(|len| file.set_len(len))
        .map_err(|e| Error::io("write", staging, e))?;
    if durable {
        file.sync_all().map_err(|e| Error::io("sync", staging, e))?;
    }
    Ok(true)
}

/// Releases a `flock` explicitly when dropped, before its file is closed.
///
/// Closing the descriptor is not enough: the lock belongs to the open file description,
/// and a process started by another thread in the meantime holds a copy of every
/// descriptor until its `exec` closes them (close-on-exec). Until then the lock would
/// outlive the close, and a file swapped into place right after would still be locked.
/// An explicit unlock through any copy releases it for all of them.
struct Unlock<'a>(&'a File);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Make the directory entries below `path` (creations, renames) durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", path, e))
}

/// `rename`, where a missing source is not an error (it reports `false`).
pub fn rename_if_present(from: &Path, to: &Path, action: &'static str) -> Result<bool> {
    match fs::rename(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(action, from, e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Starts, from another thread, a child that holds copies of this process's
    /// descriptors for `millis` before it `exec`s (and so closes them), as any process
    /// started by another thread at the wrong moment does for a shorter while. Returns once
    /// the child is holding them; join the thread to reap it.
    pub(crate) fn child_holding_descriptors(millis: u32) -> std::thread::JoinHandle<()> {
        let thread = std::thread::spawn(move || {
            let mut cmd = std::process::Command::new("true");
            // SAFETY: usleep is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    libc::usleep(millis * 1000);
                    Ok(())
                });
            }
            // Returns once the child has exec'd.
            let mut child = cmd.spawn().expect("spawn");
            child.wait().expect("wait");
        });
        std::thread::sleep(std::time::Duration::from_millis(u64::from(millis) / 4));
        thread
    }

    #[test]
    fn a_released_lock_does_not_stay_with_a_child_that_has_not_exec_d() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let file = File::open(&path).unwrap();
        file.try_lock().unwrap();
        let unlock = Unlock(&file);
        let child = child_holding_descriptors(2000);
        drop(unlock);
        drop(file);
        let again = File::open(&path).unwrap();
        let free = again.try_lock_shared().is_ok();
        child.join().unwrap();
        assert!(free, "the lock stayed with the child");
        assert_eq!(read_whole(&path).unwrap(), b"x");
    }
}
