//! What the server says about participants' heartbeats, kept by the client store (which
//! hears it: an ages header on every answer that carries an operation, `expired` lines
//! on event streams) for remote presence (which judges with it). Ages are durations
//! measured by the server's clock, aged further here by this machine's monotonic clock,
//! so no two machines' wall clocks are ever compared.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::ids::{OperationId, ParticipantId};

use super::wire::HeartbeatAge;

/// A participant the server found stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerExpired {
    pub participant: ParticipantId,
    pub epoch: u64,
    pub age_ms: u64,
}

/// Which registration an age belongs to: host, pid and epoch.
type Key = (String, i32, u64);

/// Heartbeat ages heard from the server, and who listens for its expired participants.
#[derive(Debug, Default)]
pub struct ServerAges {
    ages: Mutex<HashMap<Key, (u64, Instant)>>,
    /// The stale threshold event streams ask the server to judge with (0: none).
    stale_ms: AtomicU64,
    expired: Mutex<HashMap<OperationId, Vec<mpsc::UnboundedSender<ServerExpired>>>>,
}

impl ServerAges {
    /// Take in ages the server just sent.
    pub fn record(&self, ages: &[HeartbeatAge]) {
        let now = Instant::now();
        let mut table = self.ages.lock().unwrap_or_else(|e| e.into_inner());
        for age in ages {
            table.insert((age.host.clone(), age.pid, age.epoch), (age.age_ms, now));
        }
    }

    /// The age of a registration's last beat now, by the server's clock; `None` when
    /// the server has said nothing of it.
    pub fn age_ms(&self, host: &str, pid: i32, epoch: u64) -> Option<u64> {
        let table = self.ages.lock().unwrap_or_else(|e| e.into_inner());
        let (age, heard) = table.get(&(host.to_string(), pid, epoch))?;
        let since = u64::try_from(heard.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(age.saturating_add(since))
    }

    /// The threshold the server judges event streams' participants with.
    pub fn set_stale_threshold(&self, threshold: Duration) {
        let ms = u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX);
        self.stale_ms.store(ms.max(1), Ordering::Relaxed);
    }

    pub fn stale_ms(&self) -> Option<u64> {
        Some(self.stale_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// The participants of `op` the server will find stale.
    pub fn subscribe_expired(&self, op: &OperationId) -> mpsc::UnboundedReceiver<ServerExpired> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        let list = subs.entry(op.clone()).or_default();
        list.retain(|s| !s.is_closed());
        list.push(tx);
        rx
    }

    /// Tell the listeners of `op`.
    pub fn publish_expired(&self, op: &OperationId, expired: ServerExpired) {
        let mut subs = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = subs.get_mut(op) {
            list.retain(|s| s.send(expired.clone()).is_ok());
        }
    }
}
