//! Small file-system helpers shared by the file store: private files and directories
//! whose modes do not depend on the umask, and directory syncs for `durable`.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the store creates.
pub const DIR_MODE: u32 = 0o700;

/// Create `path` (one level; the parent must exist) as a private directory. An existing
/// directory is left as it is.
pub fn create_private_dir(path: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io("set permissions of", path, e)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
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

/// Open `options` on `path`, making a file it creates private whatever the umask.
/// `fchmod` is cheap next to the write that follows, and the umask can only be read by
/// changing it, which would race with other threads.
pub fn open_private(options: &mut OpenOptions, path: &Path, action: &'static str) -> Result<File> {
    let file = options
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| Error::io(action, path, e))?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(|e| Error::io("set permissions of", path, e))?;
    Ok(file)
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
