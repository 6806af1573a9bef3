//! File names of the embedded ledger, in one place.

use std::path::{Path, PathBuf};

use crate::ids::OperationId;
use crate::store::LogKind;

pub const OPERATION_SUFFIX: &str = ".operation.json";

pub fn operation_file_name(op: &OperationId) -> String {
    format!("{op}{OPERATION_SUFFIX}")
}

/// The `seq` of a trail entry name `{seq:08}_{op}.json`.
pub fn trail_seq(name: &str) -> Option<u64> {
    let (seq, _) = name.split_once('_')?;
    seq.parse().ok()
}

#[derive(Clone, Debug)]
pub struct Paths {
    base: PathBuf,
}

impl Paths {
    pub fn new(base: PathBuf) -> Self {
        Self { base }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn operation(&self, op: &OperationId) -> PathBuf {
        self.base.join(operation_file_name(op))
    }

    pub fn lock(&self, op: &OperationId) -> PathBuf {
        self.base.join(format!("{op}{OPERATION_SUFFIX}.lock"))
    }

    /// The temp file a writer fills before renaming it over the operation file. One name
    /// per operation is enough: only the lock holder writes it.
    pub fn temp(&self, op: &OperationId) -> PathBuf {
        self.base.join(format!(".{op}{OPERATION_SUFFIX}.tmp"))
    }

    pub fn log(&self, op: &OperationId, kind: LogKind) -> PathBuf {
        match kind {
            LogKind::Main => self.base.join(format!("{op}.operation.log")),
            LogKind::Debug => self.base.join(format!("{op}.operation.debug.log")),
        }
    }

    /// The generation before the live log (see `log.rs`).
    pub fn rotated_log(&self, op: &OperationId, kind: LogKind) -> PathBuf {
        rotated(self.log(op, kind))
    }

    pub fn trail_dir(&self, op: &OperationId) -> PathBuf {
        self.base.join(format!("{op}_trail"))
    }

    pub fn trail_entry(&self, op: &OperationId, seq: u64) -> PathBuf {
        self.trail_dir(op).join(format!("{seq:08}_{op}.json"))
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.base.join("backup")
    }

    pub fn archive_dir(&self, op: &OperationId) -> PathBuf {
        self.backup_dir().join(op.as_str())
    }

    pub fn archived_operation(&self, op: &OperationId) -> PathBuf {
        self.archive_dir(op).join("operation.json")
    }

    /// The file that marks `backup/{op}` as an archive the store wrote.
    pub fn archive_marker(&self, op: &OperationId) -> PathBuf {
        self.archive_dir(op).join(".tom-ledger-archive")
    }

    pub fn archived_trail(&self, op: &OperationId) -> PathBuf {
        self.archive_dir(op).join("trail")
    }

    pub fn archived_log(&self, op: &OperationId, kind: LogKind) -> PathBuf {
        let name = match kind {
            LogKind::Main => "operation.log",
            LogKind::Debug => "operation.debug.log",
        };
        self.archive_dir(op).join(name)
    }

    pub fn archived_rotated_log(&self, op: &OperationId, kind: LogKind) -> PathBuf {
        rotated(self.archived_log(op, kind))
    }
}

/// `{log}.1`: the log generation before `log`.
pub fn rotated(log: PathBuf) -> PathBuf {
    let mut name = log.into_os_string();
    name.push(".1");
    PathBuf::from(name)
}
