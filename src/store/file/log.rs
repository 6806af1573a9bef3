//! The operation logs: appended without the lock, read by offset.
//!
//! Each line goes out in one `write` on an `O_APPEND` descriptor, so concurrent writers
//! never interleave within a line. Logs are created with the operation and are never
//! created by an append to an operation that does not exist: an append that races with
//! archiving finds the log in the archive (same inode, so offsets carry over) instead of
//! leaving a stray log next to the ledger.
//!
//! Rotation bounds a live log: past `log_max_bytes` the log is moved to `{log}.1`
//! (replacing the generation before, which is dropped) and a new one starts with the line
//! `{time} [INFO] LOG_ROTATED offset={n} ...`, where `n` is where it starts in the log
//! as a whole. Offsets handed to readers count in that whole log, so a reader that
//! follows the log goes on from `{log}.1` into the new file without losing its place.
//! Rotation runs under the operation lock (two appenders that both see the log too big
//! rotate it once) and swaps the new file in with one `RENAME_EXCHANGE`, so appenders
//! always find a live log. The archive keeps both generations.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::io::{exchange, exchange_unsupported, open_private, sync_dir, write_private};
use super::paths::{Paths, rotated};
use super::trust::{self, Owner, open_entry};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::{LogLevel, log_line, time};
use crate::store::LogKind;

/// What the first line of a log generation that follows a rotated one carries.
const ROTATED_TAG: &str = " [INFO] LOG_ROTATED offset=";

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
/// one line. Returns the size of the live log after the line (`None` when the line went
/// to the archive), for the caller to decide on rotation.
pub fn append(
    paths: &Paths,
    op: &OperationId,
    kind: LogKind,
    line: &str,
    durable: bool,
) -> Result<Option<u64>> {
    append_lines(paths, op, kind, &[line], durable)
}

/// [`append`] for several lines at once: one open and one write for all of them, so
/// they stay together and in order.
pub fn append_lines(
    paths: &Paths,
    op: &OperationId,
    kind: LogKind,
    lines: &[&str],
    durable: bool,
) -> Result<Option<u64>> {
    let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        for c in line.chars() {
            match c {
                '\n' => buf.push_str("\\n"),
                '\r' => buf.push_str("\\r"),
                c => buf.push(c),
            }
        }
        buf.push('\n');
    }
    let (mut file, path, before) = open_for_append(paths, op, kind)?;
    file.write_all(buf.as_bytes())
        .map_err(|e| Error::io("append to", &path, e))?;
    if durable {
        file.sync_data().map_err(|e| Error::io("sync", &path, e))?;
    }
    if path != paths.log(op, kind) {
        return Ok(None);
    }
    // The size from the open's `fstat` plus these lines: other appenders may have added
    // theirs meanwhile, so it is at most the real size, which only delays a rotation
    // by their lines.
    Ok(Some(before + buf.len() as u64))
}

/// Rotate the live log if it is still larger than `max` (another writer may have done it
/// meanwhile). The caller holds the operation lock.
pub fn rotate(
    paths: &Paths,
    op: &OperationId,
    kind: LogKind,
    max: u64,
    durable: bool,
) -> Result<()> {
    let live = paths.log(op, kind);
    let file = match File::open(&live) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open", &live, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", &live, e))?
        .len();
    if len <= max {
        return Ok(());
    }
    let offset = base_of(&file).saturating_add(len);
    let previous = paths.rotated_log(op, kind);
    let name = previous
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let header = log_line(
        &time::now(),
        LogLevel::Info,
        &format!("LOG_ROTATED offset={offset} earlier lines are in {name}"),
    );
    let staging = {
        let mut s = live.clone().into_os_string();
        s.push(".new");
        PathBuf::from(s)
    };
    write_private(&staging, format!("{header}\n").as_bytes(), durable)?;
    let swapped = match exchange(&staging, &live) {
        Ok(()) => fs::rename(&staging, &previous).map_err(|e| Error::io("rotate", &live, e)),
        Err(e) if exchange_unsupported(&e) => {
            // Without RENAME_EXCHANGE the live log is briefly missing; an appender in
            // that moment writes to the generation being moved.
            fs::rename(&live, &previous).map_err(|e| Error::io("rotate", &live, e))?;
            fs::rename(&staging, &live).map_err(|e| Error::io("rotate", &live, e))
        }
        Err(e) => {
            let _ = fs::remove_file(&staging);
            Err(Error::io("rotate", &live, e))
        }
    };
    if swapped.is_ok() && durable {
        sync_dir(paths.base())?;
    }
    swapped
}

/// Where the log file starts in the log as a whole: the offset its `LOG_ROTATED` first
/// line names, else 0 (a first generation). The file is input: offsets are only ever
/// added with saturation.
fn base_of(file: &File) -> u64 {
    let mut buf = [0u8; 256];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
        return 0;
    };
    let Ok(first) = std::str::from_utf8(&buf[..end]) else {
        return 0;
    };
    first
        .split_once(ROTATED_TAG)
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn open_for_append(paths: &Paths, op: &OperationId, kind: LogKind) -> Result<(File, PathBuf, u64)> {
    if let Some((file, path, len)) =
        open_existing(paths, op, kind, Owner::Me, OpenOptions::new().append(true))?
    {
        return Ok((file, path, len));
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
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", &path, e))?
        .len();
    Ok((file, path, len))
}

/// The live log, else the archived one (archiving may move it between the two tries),
/// with its size when opened. Never through a symlink, nor into an archive directory
/// that is one (see `trust.rs`).
fn open_existing(
    paths: &Paths,
    op: &OperationId,
    kind: LogKind,
    owner: Owner,
    options: &mut OpenOptions,
) -> Result<Option<(File, PathBuf, u64)>> {
    for path in [paths.log(op, kind), paths.archived_log(op, kind)] {
        if path == paths.archived_log(op, kind) {
            trust::check_dir_if_present(&paths.archive_dir(op), "archive directory")?;
        }
        match open_entry(options, &path, 0, owner, "open") {
            Ok((file, meta)) => return Ok(Some((file, path, meta.len()))),
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The log from offset `from` on (counted in the log as a whole, across rotations), whole
/// lines only, and the offset to continue from. A line being appended right now comes
/// with the next call. Lines of a generation already dropped are skipped.
pub fn read(paths: &Paths, op: &OperationId, kind: LogKind, from: u64) -> Result<(String, u64)> {
    let Some((mut file, path, _)) = open_existing(
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
    let base = base_of(&file);
    let mut text = String::new();
    let mut from = from;
    if from < base {
        let previous = rotated(path.clone());
        match read_previous(&previous, base, from)? {
            Previous::Read(lines, next) => {
                text = lines;
                if next < base {
                    return Ok((text, next));
                }
                from = base;
            }
            Previous::NotYet => return Ok((String::new(), from)),
        }
    }
    file.seek(SeekFrom::Start(from - base))
        .map_err(|e| Error::io("seek", &path, e))?;
    let (lines, consumed) = whole_lines(&mut file, &path)?;
    text.push_str(&lines);
    Ok((text, from.saturating_add(consumed)))
}

enum Previous {
    /// Lines of the previous generation and the offset after them (`base` once it has
    /// been read to its end).
    Read(String, u64),
    /// The generations are being switched right now: try again.
    NotYet,
}

/// Read the generation before the one starting at `base`, from offset `from`.
fn read_previous(path: &Path, base: u64, from: u64) -> Result<Previous> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        // Dropped or never kept: go on with the newer generation.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(Previous::Read(String::new(), base));
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let start = base_of(&file);
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if start.saturating_add(len) < base {
        // Not the generation right before (a rotation is half-way).
        return Ok(Previous::NotYet);
    }
    // Lines before `start` were dropped with an older generation.
    let at = from.max(start);
    file.seek(SeekFrom::Start(at - start))
        .map_err(|e| Error::io("seek", path, e))?;
    let (lines, consumed) = whole_lines(&mut file, path)?;
    let next = at.saturating_add(consumed);
    if next - start >= len {
        Ok(Previous::Read(lines, base))
    } else {
        Ok(Previous::Read(lines, next))
    }
}

/// The rest of `file`, whole lines only, and how many bytes they are.
fn whole_lines(file: &mut File, path: &Path) -> Result<(String, u64)> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(whole);
    Ok((String::from_utf8_lossy(&bytes).into_owned(), whole as u64))
}
