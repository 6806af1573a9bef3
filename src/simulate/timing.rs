//! The timing of a simulation: fast by default (short heartbeats and stale threshold, so
//! a hang is judged in about three seconds), slowed down with a pace for demonstrations
//! (the original's `callDelayMs`).

use std::time::Duration;

/// Heartbeat, stale threshold, deadlines and pace of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Every participant's heartbeat interval.
    pub heartbeat: Duration,
    /// The one stale threshold: a hung participant is declared crashed past it.
    pub stale: Duration,
    /// How long a failing operation's coordinator waits for live participants to clean
    /// up (it goes on as soon as they are done).
    pub cleanup_wait: Duration,
    /// Extra time each call stays open, for a run one can follow (0: none).
    pub pace: Duration,
    /// How long an external call waits for its answer (the original's
    /// `externalCallTimeoutMs`); a timeout fault lets it pass.
    pub response_deadline: Duration,
    /// Upper bound on each step of the run (a participant's answer to a command).
    pub step_bound: Duration,
    /// Upper bound on the end of a run after the last step or a fault: every process
    /// gone, the operation archived. What is left then is killed and reported.
    pub settle_bound: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing::fast()
    }
}

impl Timing {
    /// The default: a run of all built-in scenarios takes seconds.
    pub fn fast() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            stale: Duration::from_millis(3000),
            cleanup_wait: Duration::from_secs(5),
            pace: Duration::ZERO,
            response_deadline: Duration::from_millis(4000),
            step_bound: Duration::from_secs(30),
            settle_bound: Duration::from_secs(40),
        }
    }

    /// Fast timing, with every call kept open `pace` longer; the answer deadline and
    /// the bounds grow with it.
    pub fn paced(pace: Duration) -> Self {
        let fast = Timing::fast();
        Timing {
            pace,
            response_deadline: fast.response_deadline + pace * 2,
            step_bound: fast.step_bound + pace * 2,
            settle_bound: fast.settle_bound + pace * 2,
            ..fast
        }
    }
}
