//! Frame changes wait for a refused whole-document writer. The server applies frame
//! changes itself (`frames.rs`), many a second under load, each moving the operation's
//! revision on; a participant's other changes (a join, a leave) are still whole documents
//! written with `If-Match`, and the retry of one that was refused would find the
//! operation moved on again, refused after refused. So once such a write is refused,
//! the operation's frame writes wait until a whole-document write of it succeeds (the
//! refused writer's retry, sent with the operation the refusal carried) or
//! [`HOLD_BOUND`] has passed (the writer gave up).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ids::OperationId;

/// Longest a refused writer holds its operation's frame writes.
pub const HOLD_BOUND: Duration = Duration::from_millis(50);

/// The operations whose frame writes wait, and until when at most.
#[derive(Debug, Default)]
pub struct WriteHolds {
    until: Mutex<HashMap<OperationId, Instant>>,
    released: Notify,
}

impl WriteHolds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OperationId, Instant>> {
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A whole-document write of `op` was refused: hold its frame writes (from before
    /// the refusal's current operation is read, so none slips in between).
    pub fn hold(&self, op: &OperationId) {
        self.lock().insert(op.clone(), Instant::now() + HOLD_BOUND);
    }

    /// A whole-document write of `op` succeeded: its frame writes go on.
    pub fn release(&self, op: &OperationId) {
        if self.lock().remove(op).is_some() {
            self.released.notify_waiters();
        }
    }

    /// Whether `op`'s frame writes are held now.
    pub fn is_held(&self, op: &OperationId) -> bool {
        self.lock()
            .get(op)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Wait while `op`'s frame writes are held.
    pub async fn wait(&self, op: &OperationId) {
        loop {
            let released = self.released.notified();
            let deadline = {
                let mut holds = self.lock();
                match holds.get(op) {
                    Some(until) if *until > Instant::now() => *until,
                    Some(_) => {
                        holds.remove(op);
                        return;
                    }
                    None => return,
                }
            };
            let _ = tokio::time::timeout_at(deadline, released).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> OperationId {
        OperationId::parse("op-held").expect("id")
    }

    #[tokio::test]
    async fn a_hold_lasts_until_released() {
        let holds = std::sync::Arc::new(WriteHolds::default());
        holds.hold(&op());
        let waiter = {
            let holds = holds.clone();
            tokio::spawn(async move { holds.wait(&op()).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "held");
        holds.release(&op());
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("released within the bound")
            .expect("waiter");
    }

    #[tokio::test]
    async fn a_hold_ends_by_itself_after_its_bound() {
        let holds = WriteHolds::default();
        holds.hold(&op());
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), holds.wait(&op()))
            .await
            .expect("the hold ends");
        assert!(started.elapsed() >= HOLD_BOUND);
        assert!(!holds.is_held(&op()));
        // Nothing held: no wait.
        tokio::time::timeout(Duration::from_secs(30), holds.wait(&op()))
            .await
            .expect("no wait");
    }
}
