//! Job control: time spent stopped does not count.
//!
//! A supervisor that handles SIGTSTP itself (the command does; the library never installs
//! such a handler on its own) stops every worker group, then itself, and resumes them on
//! SIGCONT. Timeouts must not expire because the user pressed Ctrl+Z for a while, so the
//! process-wide [`JobControl`] keeps the time spent paused ([`PausedTime`]) and every
//! timeout of this layer is a [`PausableDeadline`] measured against it.
//!
//! The pause is recorded *before* the process stops and the resume right after it
//! continues, so a timer that wakes up first after a long stop finds the pause already
//! counted and sleeps on for what is left.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::registry::registry;
use super::signal::Signal;

/// Time spent paused, as a pure value: every method takes `now`, so it is tested with
/// made-up instants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PausedTime {
    /// Finished pauses.
    total: Duration,
    /// Start of the pause under way.
    since: Option<Instant>,
}

impl PausedTime {
    /// Start a pause (no effect while paused). Returns whether it started one.
    pub fn pause(&mut self, now: Instant) -> bool {
        if self.since.is_some() {
            return false;
        }
        self.since = Some(now);
        true
    }

    /// End the pause under way. Returns how long it lasted (`None` when not paused).
    pub fn resume(&mut self, now: Instant) -> Option<Duration> {
        let since = self.since.take()?;
        let lasted = now.saturating_duration_since(since);
        self.total += lasted;
        Some(lasted)
    }

    pub fn is_paused(&self) -> bool {
        self.since.is_some()
    }

    /// All time paused up to `now`, the pause under way included.
    pub fn total_at(&self, now: Instant) -> Duration {
        self.total
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// A deadline that runs only while the process is not paused: it expires once `budget`
/// of unpaused time has passed since it was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PausableDeadline {
    budget: Duration,
    start: Instant,
    /// Paused time already spent when the deadline was set.
    paused_at_start: Duration,
}

impl PausableDeadline {
    /// A deadline `budget` of running time after `now`.
    pub fn new(budget: Duration, now: Instant, paused: &PausedTime) -> Self {
        PausableDeadline {
            budget,
            start: now,
            paused_at_start: paused.total_at(now),
        }
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Running (unpaused) time since the deadline was set.
    pub fn used(&self, now: Instant, paused: &PausedTime) -> Duration {
        let paused_since_start = paused.total_at(now).saturating_sub(self.paused_at_start);
        now.saturating_duration_since(self.start)
            .saturating_sub(paused_since_start)
    }

    /// Running time left; zero once expired.
    pub fn remaining(&self, now: Instant, paused: &PausedTime) -> Duration {
        self.budget.saturating_sub(self.used(now, paused))
    }

    pub fn is_expired(&self, now: Instant, paused: &PausedTime) -> bool {
        self.remaining(now, paused).is_zero()
    }
}

/// The process-wide job-control state: whether this process is paused, for how long it
/// was, and the worker groups it stopped.
#[derive(Debug)]
pub struct JobControl {
    time: Mutex<PausedTime>,
    /// Tells sleeping deadlines that a pause began or ended.
    changes: watch::Sender<bool>,
}

/// The job control of this process.
pub fn job_control() -> &'static JobControl {
    static JOB_CONTROL: OnceLock<JobControl> = OnceLock::new();
    JOB_CONTROL.get_or_init(|| JobControl {
        time: Mutex::new(PausedTime::default()),
        changes: watch::channel(false).0,
    })
}

/// How long [`JobControl::stop_workers`] waits for every worker process to show as
/// stopped (resending SIGTSTP meanwhile) before the supervisor stops itself.
const STOP_CONFIRM: Duration = Duration::from_millis(500);

impl JobControl {
    fn time(&self) -> MutexGuard<'_, PausedTime> {
        self.time.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The paused time so far.
    pub fn paused_time(&self) -> PausedTime {
        *self.time()
    }

    pub fn is_paused(&self) -> bool {
        self.time().is_paused()
    }

    /// A deadline `budget` of running time from now.
    pub fn deadline(&self, budget: Duration) -> PausableDeadline {
        PausableDeadline::new(budget, Instant::now(), &self.time())
    }

    /// Count time as paused from now on and send SIGTSTP to every registered worker
    /// group (each is its own process group, so the terminal's Ctrl+Z does not reach
    /// it). Returns how many groups were signalled; 0 and nothing sent when already
    /// paused.
    pub fn stop_workers(&self) -> usize {
        if !self.time().pause(Instant::now()) {
            return 0;
        }
        self.changes.send_replace(true);
        registry().stop_all_groups(STOP_CONFIRM)
    }

    /// Send SIGCONT to every registered worker group and stop counting time as paused.
    /// Returns how long the pause lasted (`None` when this process was not paused by
    /// [`stop_workers`](Self::stop_workers); the groups get SIGCONT all the same, which
    /// does nothing to a running process).
    pub fn continue_workers(&self) -> Option<Duration> {
        registry().signal_all(Signal::SIGCONT);
        let lasted = self.time().resume(Instant::now());
        self.changes.send_replace(false);
        lasted
    }

    /// Stop this process (SIGSTOP to itself) until someone sends SIGCONT; returns once it
    /// runs again. Only for a program that handles SIGTSTP itself: the library never
    /// calls it on its own.
    pub fn stop_self(&self) {
        // SAFETY: plain system calls on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGSTOP);
        }
    }

    /// Sleep until `deadline` has expired, not counting time paused.
    pub async fn sleep_until(&self, deadline: &PausableDeadline) {
        let mut changes = self.changes.subscribe();
        loop {
            let (paused, remaining) = {
                let time = self.time();
                let now = Instant::now();
                (time.is_paused(), deadline.remaining(now, &time))
            };
            if remaining.is_zero() {
                return;
            }
            if paused {
                // Nothing runs out while paused: wait for the resume.
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(remaining) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Sleep until an optional deadline; forever without one.
    pub async fn sleep_until_opt(&self, deadline: Option<&PausableDeadline>) {
        match deadline {
            Some(d) => self.sleep_until(d).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn paused_time_counts_finished_and_running_pauses() {
        let t0 = Instant::now();
        let mut p = PausedTime::default();
        assert_eq!(p.total_at(t0 + 10 * S), Duration::ZERO);
        assert!(p.pause(t0 + S));
        assert!(!p.pause(t0 + 2 * S), "a second pause does not restart it");
        assert_eq!(p.total_at(t0 + 4 * S), 3 * S);
        assert_eq!(p.resume(t0 + 5 * S), Some(4 * S));
        assert_eq!(p.resume(t0 + 6 * S), None);
        assert_eq!(p.total_at(t0 + 9 * S), 4 * S);
    }

    #[test]
    fn a_deadline_does_not_run_while_paused() {
        let t0 = Instant::now();
        let mut p = PausedTime::default();
        let d = PausableDeadline::new(3 * S, t0, &p);
        assert_eq!(d.remaining(t0 + S, &p), 2 * S);
        p.pause(t0 + S);
        // Ten seconds stopped: still two seconds left, during and after the pause.
        assert_eq!(d.remaining(t0 + 11 * S, &p), 2 * S);
        assert!(!d.is_expired(t0 + 11 * S, &p));
        p.resume(t0 + 11 * S);
        assert_eq!(d.remaining(t0 + 12 * S, &p), S);
        assert!(d.is_expired(t0 + 13 * S, &p));
    }

    #[test]
    fn a_deadline_set_after_a_pause_ignores_it() {
        let t0 = Instant::now();
        let mut p = PausedTime::default();
        p.pause(t0);
        p.resume(t0 + 5 * S);
        let d = PausableDeadline::new(2 * S, t0 + 6 * S, &p);
        assert_eq!(d.remaining(t0 + 7 * S, &p), S);
        // Set during a pause: starts counting at the resume.
        p.pause(t0 + 8 * S);
        let during = PausableDeadline::new(2 * S, t0 + 9 * S, &p);
        p.resume(t0 + 20 * S);
        assert_eq!(during.remaining(t0 + 21 * S, &p), S);
    }

    #[tokio::test]
    async fn sleep_until_does_not_end_while_paused() {
        let jc = JobControl {
            time: Mutex::new(PausedTime::default()),
            changes: watch::channel(false).0,
        };
        let deadline = jc.deadline(S);
        jc.time().pause(Instant::now());
        jc.changes.send_replace(true);
        let sleeper = jc.sleep_until(&deadline);
        tokio::pin!(sleeper);
        // Twice the budget paused: still sleeping.
        assert!(
            tokio::time::timeout(2 * S, &mut sleeper).await.is_err(),
            "the deadline ran while paused"
        );
        let resumed = Instant::now();
        jc.time().resume(resumed);
        jc.changes.send_replace(false);
        tokio::time::timeout(30 * S, sleeper)
            .await
            .expect("the deadline ends after the resume");
        assert!(resumed.elapsed() >= S / 2, "most of the budget was left");
    }
}
