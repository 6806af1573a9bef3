//! Every live worker group of this process, so a signal handler can stop them all.
//!
//! A worker is added when it is spawned and removed once it has been reaped and nothing
//! of its group is left, or when its handle is dropped. The lock guards a small map and
//! is never held across a system call or an await: [`Registry::stop_all`] copies the
//! entries out and runs one ladder over all of them at once, so stopping a hundred groups
//! costs one grace period, not a hundred.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::group::Group;
use super::signal::{Signal, StopReason};
use super::stop::{StopOutcome, ladder};

/// The process-wide registry of live worker groups.
#[derive(Debug, Default)]
pub struct Registry {
    groups: Mutex<HashMap<u64, Arc<Group>>>,
    next: AtomicU64,
}

/// The registry of this process.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Group>>> {
        // A panic elsewhere while holding the lock leaves a consistent map: keep using it.
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn insert(&'static self, group: Arc<Group>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, group);
        Registration { registry: self, id }
    }

    /// How many worker groups are registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The process group ids of the registered workers.
    pub fn pgids(&self) -> Vec<i32> {
        self.lock().values().map(|g| g.pgid).collect()
    }

    fn snapshot(&self) -> Vec<Arc<Group>> {
        self.lock().values().cloned().collect()
    }

    /// Runs the stop ladder on every registered group at once (`grace: None` kills at
    /// once). Their runners report `reason` as the cause.
    pub async fn stop_all(&self, grace: Option<Duration>, reason: StopReason) -> StopOutcome {
        let groups = self.snapshot();
        let refs: Vec<&Group> = groups.iter().map(Arc::as_ref).collect();
        ladder(&refs, grace, reason, None).await
    }

    /// Sends `sig` to every registered group (job control: SIGTSTP, SIGCONT). Returns how
    /// many groups there were.
    pub fn signal_all(&self, sig: Signal) -> usize {
        let groups = self.snapshot();
        for g in &groups {
            if !g.is_empty() {
                g.send(sig);
            }
        }
        groups.len()
    }

    /// SIGTSTP to every registered group, then, within `bound`, again to any group with a
    /// member not yet stopped, until every member is (`T`) or the bound has passed.
    /// A stop signal can go missing (one that reaches a process between its fork and its
    /// joining the group, say), and a supervisor must not stop itself while one of its
    /// workers runs on. Returns how many groups there were.
    pub fn stop_all_groups(&self, bound: Duration) -> usize {
        let groups = self.snapshot();
        let deadline = std::time::Instant::now() + bound;
        for g in &groups {
            g.send(Signal::SIGTSTP);
        }
        loop {
            let running: Vec<&Arc<Group>> = groups
                .iter()
                .filter(|g| {
                    g.members()
                        .iter()
                        .any(|m| !matches!(m.state, b'T' | b't') && !m.has_exited())
                })
                .collect();
            if running.is_empty() || std::time::Instant::now() >= deadline {
                return groups.len();
            }
            std::thread::sleep(Duration::from_millis(5));
            for g in running {
                g.send(Signal::SIGTSTP);
            }
        }
    }

    /// SIGKILLs every registered group now, without waiting (the second Ctrl+C). Safe to
    /// call from synchronous code.
    pub fn kill_all(&self, reason: StopReason) -> usize {
        let groups = self.snapshot();
        for g in &groups {
            g.mark_stopping(reason);
            g.kill();
        }
        groups.len()
    }
}

/// A worker's entry in the registry; dropping it removes the entry.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: &'static Registry,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}
