//! [`StopReason`]: why a worker was stopped, as a type.
//!
//! The process layer stops workers for these reasons and the error type carries them
//! ([`Error::WorkerStopped`](crate::error::Error::WorkerStopped)), so the reason lives
//! below both: the error type names nothing of the process layer.

use std::fmt;

use nix::sys::signal::Signal;

/// Why a worker is being stopped. Carried into the outcome so the layer above can tell a
/// cancelled call from a timed-out or a shut-down one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The caller cancelled the work.
    Cancelled,
    /// The work ran past its timeout.
    Timeout,
    /// The operation was aborted.
    Abort,
    /// The supervisor is shutting down on this signal (SIGINT, SIGTERM, SIGHUP).
    Shutdown(Signal),
    /// The worker wrote more output than allowed.
    OutputTooLarge,
    /// The worker's handle was dropped while it still ran.
    Dropped,
    /// Stopped on request, with no more specific reason.
    Requested,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Cancelled => f.write_str("cancelled"),
            StopReason::Timeout => f.write_str("timed out"),
            StopReason::Abort => f.write_str("operation aborted"),
            StopReason::Shutdown(sig) => write!(f, "supervisor shutting down on {sig}"),
            StopReason::OutputTooLarge => f.write_str("output too large"),
            StopReason::Dropped => f.write_str("handle dropped"),
            StopReason::Requested => f.write_str("stop requested"),
        }
    }
}
