//! `{ledger}/server.json`: where a running `tom-ledger serve` of this ledger directory
//! listens (`url`) and which process it is (`pid`). Written by the server on start,
//! removed on its clean exit; a reader checks that the pid still runs before trusting
//! it (the ledger layer does: the store knows nothing of processes).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file's name in the ledger directory.
pub const SERVER_FILE: &str = "server.json";

/// Largest `server.json` read (it is input).
const MAX_BYTES: u64 = 64 * 1024;

/// The content of `server.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFile {
    pub url: String,
    pub pid: u32,
}

impl ServerFile {
    /// Where the file of a ledger directory is.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(SERVER_FILE)
    }

    /// Write the file of `dir` (mode 0600, through a rename so readers never see half
    /// of it); returns its path.
    pub fn write(dir: &Path, url: &str, pid: u32) -> Result<PathBuf> {
        let path = Self::path_in(dir);
        let tmp = dir.join(format!("{SERVER_FILE}.{pid}.tmp"));
        let text = serde_json::to_vec_pretty(&ServerFile {
            url: url.to_string(),
            pid,
        })
        .map_err(|e| Error::invalid("server file", e.to_string()))?;
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("create server file", &tmp, e))?;
        file.write_all(&text)
            .map_err(|e| Error::io("write server file", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename server file", &path, e))?;
        Ok(path)
    }

    /// Read a server file; a missing, oversized or malformed one is an error naming it.
    pub fn read_file(path: &Path) -> Result<ServerFile> {
        use std::io::Read;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io("open server file", path, e))?;
        let mut text = String::new();
        file.take(MAX_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| Error::io("read server file", path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("server file `{}`", path.display()), e.to_string()))
    }
}
