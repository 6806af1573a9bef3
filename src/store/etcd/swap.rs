//! Read-change-write in one round trip when nobody else wrote: the change runs on the
//! last value this handle saw (`known.rs`) and one transaction swaps the result in if
//! the key's `mod_revision` is still that value's, with the operation's log lines beside
//! it; otherwise the same transaction returns the current value, and the change runs
//! again on it.
//!
//! The contract of [`Store::modify`](crate::store::Store::modify) stays exact: what is
//! written was computed from the value the key held at that moment, and an `Err` from
//! the change is returned only once it came from a value the cluster has just confirmed
//! (a change refused on the remembered value runs again on a fresh read first).

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::known::Value;
use super::{EtcdStore, got, header_revision, logs, record};
use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::LedgerData;
use crate::store::read_change_write::{MAX_ATTEMPTS, back_off};
use crate::store::{Change, LogKind, Revision};

/// Most log lines written in the transaction of the change they report (etcd allows 128
/// operations in one); more are appended after it.
const LINES_WITH_CHANGE: usize = 100;

/// The value a change runs on, and whether the cluster has just confirmed it.
struct Base {
    data: LedgerData,
    mod_revision: i64,
    confirmed: bool,
}

impl EtcdStore {
    /// The remembered value of `op`, if any (and it parses).
    fn remembered_base(&self, op: &OperationId) -> Option<Base> {
        let known = self.inner.known.get(op)?;
        let data = match known.value {
            Value::Data(data) => data,
            Value::Raw(bytes) => record::decode(&self.inner.keys.live(op), op, &bytes).ok()?,
        };
        Some(Base {
            data,
            mod_revision: known.mod_revision,
            confirmed: false,
        })
    }

    async fn fresh_base(&self, op: &OperationId) -> Result<Base> {
        let (current, mod_revision) = self.read_live(op).await?;
        Ok(Base {
            data: current.data,
            mod_revision,
            confirmed: true,
        })
    }

    /// [`Store::modify_logged`](crate::store::Store::modify_logged): the change with up
    /// to [`LINES_WITH_CHANGE`] lines in one transaction, any further lines after it.
    pub(super) async fn swap_in_logged(
        &self,
        op: &OperationId,
        change: Change<'_>,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        let (with, after) = lines.split_at(lines.len().min(LINES_WITH_CHANGE));
        let written = self.swap_in(op, change, with).await?;
        let mut logged = self.trim_if_due(op, LogKind::Main, with.len()).await;
        if let Err(e) = crate::store::append_each(self, op, after).await {
            logged = Err(e);
        }
        Ok((written, logged))
    }

    /// Apply `change` and write the result with `lines` appended to the main log in the
    /// same transaction; see the module notes.
    pub(super) async fn swap_in(
        &self,
        op: &OperationId,
        change: Change<'_>,
        lines: &[String],
    ) -> Result<LedgerData> {
        let key = self.inner.keys.live(op);
        let log_keys = logs::line_keys(&self.inner.keys, op, LogKind::Main, lines.len());
        let mut next = self.remembered_base(op);
        let mut attempt = 0;
        loop {
            let base = match next.take() {
                Some(base) => base,
                None => self.fresh_base(op).await?,
            };
            let Base {
                mut data,
                mod_revision,
                confirmed,
            } = base;
            let seq = data.seq;
            if let Err(e) = change(&mut data) {
                if confirmed {
                    return Err(e);
                }
                // Refused on a value that may be old: only a fresh one may refuse.
                continue;
            }
            attempt += 1;
            data.operation_id = op.clone();
            data.seq = seq + 1;
            let value = record::encode(&data);
            let mut puts = vec![TxnOp::put(key.as_str(), value.clone(), None)];
            for (log_key, line) in log_keys.iter().zip(lines) {
                puts.push(TxnOp::put(log_key.as_str(), logs::escape(line), None));
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    mod_revision,
                )])
                .and_then(puts)
                .or_else([TxnOp::get(key.as_str(), None)]);
            let response = self.txn(txn).await?;
            let written_at = if response.succeeded() {
                Some(header_revision(&response))
            } else {
                let responses = response.op_responses();
                let Some(kv) = got(&responses, 0) else {
                    self.forget(op);
                    return Err(Error::OperationNotFound(op.clone()));
                };
                if kv.value() == value.as_slice() {
                    // Applied by an attempt whose reply was lost (its lines with it).
                    Some(kv.mod_revision())
                } else {
                    let found = record::decode(&key, op, kv.value())?;
                    self.remember(op, found.seq, kv.mod_revision());
                    self.inner
                        .known
                        .offer(op, Value::Data(found.clone()), kv.mod_revision());
                    if attempt >= MAX_ATTEMPTS {
                        return Err(Error::Conflict {
                            operation: op.clone(),
                            expected: Revision::new(seq),
                            found: Revision::new(found.seq),
                        });
                    }
                    next = Some(Base {
                        data: found,
                        mod_revision: kv.mod_revision(),
                        confirmed: true,
                    });
                    back_off(attempt).await;
                    None
                }
            };
            if let Some(at) = written_at {
                self.remember(op, data.seq, at);
                self.inner.known.offer(op, Value::Data(data.clone()), at);
                return Ok(data);
            }
        }
    }
}
