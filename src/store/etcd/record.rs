//! An operation as an etcd value: the same JSON the file store writes (compact), read
//! back as input (a value that does not parse, or names another operation, is corrupt).

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;

/// The value stored for `data`.
pub fn encode(data: &LedgerData) -> Vec<u8> {
    serde_json::to_vec(data).expect("ledger data always serialises")
}

/// The operation stored under `key`, which must be `op`.
pub fn decode(key: &str, op: &OperationId, value: &[u8]) -> Result<LedgerData> {
    let corrupt = |reason: String| Error::Corrupt {
        path: PathBuf::from(key),
        reason,
    };
    let data = LedgerData::from_json(value).map_err(|e| corrupt(e.to_string()))?;
    if &data.operation_id != op {
        return Err(corrupt(format!(
            "holds operation `{}` instead of `{op}`",
            data.operation_id
        )));
    }
    Ok(data)
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// The `seq` of a stored value, without reading the rest; `None` when it has none.
pub fn seq_of(value: &[u8]) -> Option<u64> {
    serde_json::from_slice::<SeqOnly>(value).ok().map(|s| s.seq)
}
