//! The operation logs: appended without the lock, read by offset.
//!
//! Each line goes out in one `write` on an `O_APPEND` descriptor, so concurrent writers
//! never interleave within a line. Logs are created with the operation and are never
//! created by an append to an operation that does not exist: an append that races with
//! archiving finds the log in the archive (same inode, so offsets carry over) instead of
//! leaving a stray log next to the ledger.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::io::open_private;
use super::paths::Paths;
use super::trust::{self, Owner, open_entry};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::store::LogKind;

/// Create an empty log (the operation is being created).
pub fn create(path: &Path) -> Result<()> {
    open_private(
        OpenOptions::new().append(true).create(true),
        path,
        "create log",
    )
    .map(drop)
}

/// Append `line` and a newline; embedded line breaks are escaped so that one event stays
/// one line.
pub fn append(
    paths: &Paths,
    op: &OperationId,
    kind: LogKind,
    line: &str,
    durable: bool,
) -> Result<()> {
    let mut buf = String::with_capacity(line.len() + 1);
    for c in line.chars() {
        match c {
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            c => buf.push(c),
        }
    }
    buf.push('\n');
    let (mut file, path) = open_for_append(paths, op, kind)?;
    file.write_all(buf.as_bytes())
        .map_err(|e| Error::io("append to", &path, e))?;
    if durable {
        file.sync_data().map_err(|e| Error::io("sync", &path, e))?;
    }
    Ok(())
}

fn open_for_append(paths: &Paths, op: &OperationId, kind: LogKind) -> Result<(File, PathBuf)> {
    if let Some(found) = open_existing(paths, op, kind, Owner::Me, OpenOptions::new().append(true))?
    {
        return Ok(found);
    }
    // The log is missing (deleted by hand, or a debug log the original never created):
    // start it where the operation is.
    let path = if paths.operation(op).exists() {
        paths.log(op, kind)
    } else if paths.archived_operation(op).exists() {
        paths.archived_log(op, kind)
    } else {
        return Err(Error::OperationNotFound(op.clone()));
    };
    let file = open_private(
        OpenOptions::new().append(true).create(true),
        &path,
        "create log",
    )?;
    Ok((file, path))
}

/// The live log, else the archived one (archiving may move it between the two tries).
/// Never through a symlink, nor into an archive directory that is one (see `trust.rs`).
fn open_existing(
    paths: &Paths,
    op: &OperationId,
    kind: LogKind,
    owner: Owner,
    options: &mut OpenOptions,
) -> Result<Option<(File, PathBuf)>> {
    for path in [paths.log(op, kind), paths.archived_log(op, kind)] {
        if path == paths.archived_log(op, kind) {
            trust::check_dir_if_present(&paths.archive_dir(op), "archive directory")?;
        }
        match open_entry(options, &path, 0, owner, "open") {
            Ok((file, _)) => return Ok(Some((file, path))),
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The log from byte `from` on, whole lines only, and the offset to continue from. A line
/// being appended right now comes with the next call.
pub fn read(paths: &Paths, op: &OperationId, kind: LogKind, from: u64) -> Result<(String, u64)> {
    let Some((mut file, path)) = open_existing(
        paths,
        op,
        kind,
        Owner::Anyone,
        OpenOptions::new().read(true),
    )?
    else {
        // An operation whose log was never created has an empty log.
        if paths.operation(op).exists() || paths.archived_operation(op).exists() {
            return Ok((String::new(), from));
        }
        return Err(Error::OperationNotFound(op.clone()));
    };
    file.seek(SeekFrom::Start(from))
        .map_err(|e| Error::io("seek", &path, e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", &path, e))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(whole);
    let next = from + whole as u64;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), next))
}
