//! The window between a participant's registration and its presence key.
//!
//! A participant joins the shared document first and puts its lease-bound key after
//! (the key names the epoch the join gave it). In between, a peer whose clock runs
//! ahead sees a registration with an old heartbeat and no key. Such a registration
//! gets one stale threshold, counted on the observer's monotonic clock from the moment
//! it first saw it, before heartbeat age may judge it: no clock of another machine is
//! read, and a participant that never puts a key (a record from elsewhere) is still
//! judged, one threshold later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::Participant;

/// A registration as its key would name it: epoch, host, pid, start time.
type Registration = (u64, String, i32, Option<u64>);

/// When this process first saw each registration.
#[derive(Default)]
pub(super) struct Grace {
    first_seen: Mutex<HashMap<Registration, Instant>>,
}

impl Grace {
    /// Note `p` as seen now, unless it was seen before.
    pub fn saw(&self, p: &Participant) {
        self.first_seen_at(p);
    }

    /// Whether `p` was first seen less than `threshold` ago (noting it if new).
    pub fn within(&self, p: &Participant, threshold: Duration) -> bool {
        self.first_seen_at(p).elapsed() < threshold
    }

    fn first_seen_at(&self, p: &Participant) -> Instant {
        let key = (p.epoch, p.host.clone(), p.pid, p.start_ticks);
        let mut seen = self.first_seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = seen.get(&key) {
            return *at;
        }
        let now = Instant::now();
        // Registrations past their grace long ago need no entry: their judgement no
        // longer depends on it (an entry made again later only delays by one threshold
        // a participant that never put a key).
        if seen.len() >= PRUNE_ABOVE {
            seen.retain(|_, at| now.duration_since(*at) < KEEP_FOR);
        }
        seen.insert(key, now);
        now
    }
}

/// Entries kept before old ones are pruned.
const PRUNE_ABOVE: usize = 4096;
/// How long an entry is kept once pruning starts: beyond any sane stale threshold.
const KEEP_FOR: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Participant;

    fn registration(epoch: u64) -> Participant {
        serde_json::from_value(serde_json::json!({
            "pid": 4242, "host": "host-b", "epoch": epoch,
            "lastHeartbeat": "2026-01-01T00:00:00.000Z",
            "joinedAt": "2026-01-01T00:00:00.000Z",
        }))
        .expect("a registration")
    }

    #[test]
    fn a_new_registration_is_within_its_grace_and_a_later_epoch_starts_its_own() {
        let grace = Grace::default();
        let p = registration(1);
        assert!(grace.within(&p, Duration::from_secs(60)));
        assert!(!grace.within(&p, Duration::ZERO));
        assert!(grace.within(&registration(2), Duration::from_secs(60)));
    }
}
