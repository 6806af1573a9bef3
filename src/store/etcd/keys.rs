//! Where a ledger keeps what in etcd: every key starts with the ledger's prefix, so
//! several ledgers share one cluster.
//!
//! ```text
//! {prefix}op/{op}                    the live operation (JSON, as the file store writes it)
//! {prefix}archive/{op}               an archived operation
//! {prefix}log/{op}/main/{id}         one line of the operation log each,
//! {prefix}log/{op}/debug/{id}        ordered by create revision
//! {prefix}presence/{op}/{participant}  a participant's lease-bound key (presence)
//! ```

use crate::error::{Error, Result};
use crate::ids::OperationId;

use super::super::LogKind;

/// The prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "/tom-ledger/";

/// The key layout of one ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, which must be printable, without whitespace, and end in `/`.
    pub fn new(prefix: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid(format!("etcd key prefix `{prefix}`"), reason);
        if prefix.is_empty() || !prefix.ends_with('/') {
            return Err(bad("must end in `/`"));
        }
        if prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("must not contain whitespace or control characters"));
        }
        Ok(Self {
            prefix: prefix.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn live_dir(&self) -> String {
        format!("{}op/", self.prefix)
    }

    pub fn archive_dir(&self) -> String {
        format!("{}archive/", self.prefix)
    }

    pub fn live(&self, op: &OperationId) -> String {
        format!("{}{op}", self.live_dir())
    }

    pub fn archived(&self, op: &OperationId) -> String {
        format!("{}{op}", self.archive_dir())
    }

    /// Every log line of the operation, of both logs.
    pub fn logs(&self, op: &OperationId) -> String {
        format!("{}log/{op}/", self.prefix)
    }

    pub fn log(&self, op: &OperationId, kind: LogKind) -> String {
        let name = match kind {
            LogKind::Main => "main",
            LogKind::Debug => "debug",
        };
        format!("{}{name}/", self.logs(op))
    }

    /// The presence keys of one operation.
    pub fn presence(&self, op: &OperationId) -> String {
        format!("{}presence/{op}/", self.prefix)
    }

    /// The operation a key under `dir` names; `None` for a key that names no valid id
    /// (written by someone else: listed nowhere).
    pub fn id_under(dir: &str, key: &[u8]) -> Option<OperationId> {
        let name = std::str::from_utf8(key).ok()?.strip_prefix(dir)?;
        OperationId::parse(name).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_prefix_checks() {
        let keys = Keys::new("/a/").unwrap();
        let op = OperationId::parse("op_1").unwrap();
        assert_eq!(keys.live(&op), "/a/op/op_1");
        assert_eq!(keys.archived(&op), "/a/archive/op_1");
        assert_eq!(keys.log(&op, LogKind::Debug), "/a/log/op_1/debug/");
        assert_eq!(Keys::id_under("/a/op/", b"/a/op/op_1"), Some(op));
        assert_eq!(Keys::id_under("/a/op/", b"/a/op/bad id"), None);
        for bad in ["", "/a", "/a b/", "/a\n/"] {
            let err = Keys::new(bad).unwrap_err().to_string();
            assert!(err.contains("etcd key prefix"), "{err}");
        }
    }
}
