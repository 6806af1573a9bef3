//! Where a simulation's operation lives. Every participant process connects to the same
//! backend; the runner reads the outcome from it.
//!
//! `file`: a ledger directory in the scenario's scratch directory. `server` (a
//! `tom-ledger serve` the runner starts, participants connecting with `--server`) and
//! `etcd` (participants connecting with `--etcd`) plug in here, as a [`Prepared`] that
//! says how participants connect and how the runner reads; until this build has them,
//! choosing them is refused before anything starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::ParticipantId;
use crate::ledger::Connect;

use super::timing::Timing;

/// The backend scenarios run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    File,
    Server,
    Etcd,
}

impl Backend {
    /// Parse `file`, `server` or `etcd`.
    pub fn parse(name: &str) -> Result<Backend> {
        match name {
            "file" => Ok(Backend::File),
            "server" => Ok(Backend::Server),
            "etcd" => Ok(Backend::Etcd),
            other => Err(Error::invalid(
                "backend",
                format!("`{other}` is not one of file, server, etcd"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Server => "server",
            Backend::Etcd => "etcd",
        }
    }

    /// Refused when this build cannot run scenarios on the backend.
    pub fn check_available(self) -> Result<()> {
        match self {
            Backend::File => Ok(()),
            other => Err(Error::BackendUnavailable(other.name().into())),
        }
    }

    /// Set the backend up for one scenario whose scratch directory is `scratch`.
    pub fn prepare(self, scratch: &Path) -> Result<Prepared> {
        self.check_available()?;
        Ok(Prepared::File {
            ledger_dir: scratch.join("ledger"),
        })
    }
}

/// A backend set up for one scenario.
#[derive(Clone, Debug)]
pub enum Prepared {
    File { ledger_dir: PathBuf },
}

impl Prepared {
    /// The arguments that connect a `tom-ledger` participant process to it.
    pub fn participant_args(&self) -> Vec<OsString> {
        match self {
            Prepared::File { ledger_dir } => {
                vec!["--ledger".into(), ledger_dir.clone().into_os_string()]
            }
        }
    }

    /// How the runner connects to read the outcome (creating nothing).
    pub fn reader(&self) -> Connect {
        match self {
            Prepared::File { ledger_dir } => Connect::existing(ledger_dir),
        }
    }
}

/// How a participant process connects: its id and the simulation's timing (no fsync:
/// a simulation's ledger is scratch).
pub fn participant_connect(
    target: Connect,
    participant: ParticipantId,
    timing: &Timing,
) -> Connect {
    target
        .participant(participant)
        .heartbeat_interval(timing.heartbeat)
        .heartbeat_jitter(std::time::Duration::ZERO)
        .stale_threshold(timing.stale)
        .cleanup_wait(timing.cleanup_wait)
        .durable(false)
}
