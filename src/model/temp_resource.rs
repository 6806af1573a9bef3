//! A temp resource as the ledger stores it, and the lossless form of its path.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::ParticipantId;

use super::time;

/// Prefix of the stored form of a path that is not UTF-8: the rest is the path's bytes in
/// lowercase hex.
pub const NON_UTF8_PREFIX: &str = "/dev/null/tom-ledger-path-bytes/";

/// A path that must be deleted when the operation fails or its owner crashes.
///
/// `path` keeps the original's field and meaning for every UTF-8 path, so the original's
/// tools read it as before. A path that is not UTF-8 cannot be written into a JSON string
/// as it is, and writing a lossy form (U+FFFD for the bad bytes) would name a *different*
/// file, which a reader would then delete. Such a path is stored as
/// [`NON_UTF8_PREFIX`] followed by its bytes in hex: the bytes round-trip exactly, the file
/// stays valid JSON, and for a tool that reads `path` as a path it names nothing that can
/// exist, because `/dev/null` is a character device and no path goes through it (every
/// lookup fails with `ENOTDIR`). The stand-in has no `.` or `..` component, so lexical
/// normalisation cannot lead it out of `/dev/null` either. A UTF-8 path that happens to
/// start with the prefix is stored the same way, so reading is never ambiguous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TempResource {
    /// The path in its stored form: see [`TempResource::encode_path`].
    pub path: String,
    /// Pid of the process that registered it.
    pub owner: i64,
    #[serde(with = "time")]
    pub registered_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<ParticipantId>,
}

impl TempResource {
    /// The stored form of `path` (lossless; UTF-8 paths unchanged).
    pub fn encode_path(path: &Path) -> String {
        match path.to_str() {
            Some(text) if !text.starts_with(NON_UTF8_PREFIX) => text.to_string(),
            _ => {
                let bytes = path.as_os_str().as_bytes();
                let mut out = String::with_capacity(NON_UTF8_PREFIX.len() + 2 * bytes.len());
                out.push_str(NON_UTF8_PREFIX);
                for b in bytes {
                    out.push_str(&format!("{b:02x}"));
                }
                out
            }
        }
    }

    /// The path a stored form names, exactly as registered. A stored form that starts
    /// with [`NON_UTF8_PREFIX`] but is not valid hex is refused (it was not written by us).
    pub fn decode_path(stored: &str) -> Result<PathBuf> {
        let Some(hex) = stored.strip_prefix(NON_UTF8_PREFIX) else {
            return Ok(PathBuf::from(stored));
        };
        let invalid = || Error::invalid(format!("temp resource `{stored}`"), "not valid hex");
        if hex.len() % 2 != 0 || hex.is_empty() {
            return Err(invalid());
        }
        let mut bytes = Vec::with_capacity(hex.len() / 2);
        for pair in hex.as_bytes().chunks(2) {
            let digits = std::str::from_utf8(pair).map_err(|_| invalid())?;
            bytes.push(u8::from_str_radix(digits, 16).map_err(|_| invalid())?);
        }
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }

    /// The path this resource names.
    pub fn target(&self) -> Result<PathBuf> {
        Self::decode_path(&self.path)
    }

    /// The path for people to read (non-UTF-8 bytes shown as U+FFFD: display only).
    pub fn display_path(stored: &str) -> String {
        match Self::decode_path(stored) {
            Ok(p) => OsStr::new(&p).to_string_lossy().into_owned(),
            Err(_) => stored.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_paths_are_stored_as_they_are() {
        let stored = TempResource::encode_path(Path::new("/tmp/a b/ü.txt"));
        assert_eq!(stored, "/tmp/a b/ü.txt");
        assert_eq!(
            TempResource::decode_path(&stored).unwrap(),
            Path::new("/tmp/a b/ü.txt")
        );
    }

    #[test]
    fn non_utf8_bytes_round_trip_through_json() {
        let path = PathBuf::from(OsStr::from_bytes(b"/tmp/x\xffy"));
        let stored = TempResource::encode_path(&path);
        assert_eq!(stored, format!("{NON_UTF8_PREFIX}2f746d702f78ff79"));
        let json = serde_json::to_string(&stored).unwrap();
        let back: String = serde_json::from_str(&json).unwrap();
        assert_eq!(TempResource::decode_path(&back).unwrap(), path);
        // Never the lossy sibling.
        assert_ne!(
            TempResource::decode_path(&back).unwrap(),
            Path::new("/tmp/x\u{FFFD}y")
        );
    }

    #[test]
    fn a_utf8_path_that_looks_encoded_is_encoded_too() {
        let tricky = format!("{NON_UTF8_PREFIX}2f");
        let stored = TempResource::encode_path(Path::new(&tricky));
        assert_ne!(stored, tricky);
        assert_eq!(
            TempResource::decode_path(&stored).unwrap(),
            Path::new(&tricky)
        );
    }

    #[test]
    fn bad_hex_is_refused_with_the_value() {
        for bad in ["2", "zz", "", "2f7"] {
            let stored = format!("{NON_UTF8_PREFIX}{bad}");
            let e = TempResource::decode_path(&stored).unwrap_err().to_string();
            assert!(e.contains(&stored), "{e}");
        }
    }
}
