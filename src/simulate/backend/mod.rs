//! Where a simulation's operation lives. Every participant process connects to the same
//! backend; the runner reads the outcome from it.
//!
//! - `file`: a ledger directory in the scenario's scratch directory.
//! - `server`: a `tom-ledger serve` of the scenario's own ([`server`]) over a ledger
//!   directory in its scratch directory, with a token; participants connect with
//!   `--server` and `--token-file`.
//! - `etcd` (a build with the `etcd` feature): the cluster named by `--etcd` /
//!   `TOM_LEDGER_ETCD`, else an etcd member of the run's own ([`etcd`]); each scenario
//!   under a key prefix of its own, participants connecting with `--etcd` and that prefix.

pub mod etcd;
pub mod server;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::ParticipantId;
use crate::ledger::Connect;

use super::timing::Timing;

pub use etcd::OwnEtcd;
pub use server::OwnServer;

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

    /// Refused when this build cannot run scenarios on the backend (etcd without the
    /// `etcd` feature). The server is this same executable: always there.
    pub fn check_available(self) -> Result<()> {
        match self {
            Backend::File | Backend::Server => Ok(()),
            Backend::Etcd if cfg!(feature = "etcd") => Ok(()),
            Backend::Etcd => Err(Error::BackendUnavailable(self.name().into())),
        }
    }

    /// Set the backend up for one scenario whose scratch directory is `scratch`:
    /// `exe` serves the server backend; `etcd` are the endpoints of the etcd backend
    /// (`None`: a member of the scenario's own is started in the scratch directory).
    pub async fn prepare(
        self,
        scratch: &Path,
        exe: &Path,
        etcd: Option<&[String]>,
    ) -> Result<Prepared> {
        self.check_available()?;
        match self {
            Backend::File => Ok(Prepared::File {
                ledger_dir: scratch.join("ledger"),
            }),
            Backend::Server => {
                let server = OwnServer::start(exe, scratch).await?;
                Ok(Prepared::Server(server))
            }
            Backend::Etcd => {
                let (endpoints, own) = match etcd {
                    Some(list) => (list.to_vec(), None),
                    None => {
                        let member = OwnEtcd::start(&scratch.join("etcd")).await?;
                        (vec![member.client_url().to_string()], Some(member))
                    }
                };
                let prefix = unique_prefix(scratch);
                // Refused here, before any participant starts, when the list is bad.
                Connect::etcd_from_list(&endpoints.join(","), Some(&prefix))?;
                Ok(Prepared::Etcd {
                    endpoints,
                    prefix,
                    own,
                })
            }
        }
    }
}

/// A key prefix no other scenario uses: the scratch directory's name (this process, a
/// counter, the scenario) and the time, for runs on other machines sharing the cluster.
fn unique_prefix(scratch: &Path) -> String {
    let name = scratch
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("/{name}-{:x}/", super::protocol::now_nanos())
}

/// A backend set up for one scenario. Whatever it started (a server, an etcd member)
/// is stopped with [`stop`](Prepared::stop), or killed when it is dropped.
#[derive(Debug)]
pub enum Prepared {
    File {
        ledger_dir: PathBuf,
    },
    Server(OwnServer),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        /// The member started for this scenario, when none was named.
        own: Option<OwnEtcd>,
    },
}

impl Prepared {
    /// The arguments that connect a `tom-ledger` participant process to it.
    pub fn participant_args(&self) -> Vec<OsString> {
        match self {
            Prepared::File { ledger_dir } => {
                vec!["--ledger".into(), ledger_dir.clone().into_os_string()]
            }
            Prepared::Server(server) => vec![
                "--server".into(),
                server.url().into(),
                "--token-file".into(),
                server.token_file().as_os_str().to_owned(),
            ],
            Prepared::Etcd { endpoints, .. } => vec!["--etcd".into(), endpoints.join(",").into()],
        }
    }

    /// Where the operation lives, for people to read (and for tests to find it).
    pub fn label(&self) -> String {
        match self {
            Prepared::File { ledger_dir } => format!("file {}", ledger_dir.display()),
            Prepared::Server(server) => format!("server {}", server.url()),
            Prepared::Etcd {
                endpoints, prefix, ..
            } => format!("etcd {} {prefix}", endpoints.join(",")),
        }
    }

    /// The etcd key prefix of the scenario, for `simulate-participant --etcd-prefix`.
    pub fn etcd_prefix(&self) -> Option<&str> {
        match self {
            Prepared::Etcd { prefix, .. } => Some(prefix),
            _ => None,
        }
    }

    /// How the runner connects to read the outcome (creating nothing).
    pub fn reader(&self) -> Result<Connect> {
        match self {
            Prepared::File { ledger_dir } => Ok(Connect::existing(ledger_dir)),
            Prepared::Server(server) => Ok(server.connect()),
            Prepared::Etcd {
                endpoints, prefix, ..
            } => Connect::etcd_from_list(&endpoints.join(","), Some(prefix)),
        }
    }

    /// Stop what was started for the scenario (and wait until it is gone).
    pub async fn stop(&mut self) {
        match self {
            Prepared::File { .. } => {}
            Prepared::Server(server) => server.stop().await,
            Prepared::Etcd { own, .. } => {
                if let Some(member) = own {
                    member.stop().await;
                }
            }
        }
    }
}

/// Wait (bounded) until the process `pid`, our child just SIGKILLed, is dead: gone or a
/// zombie. For drops, which cannot await: what it wrote is complete before its directory
/// is removed.
fn wait_dead(pid: i32, bound: std::time::Duration) {
    let deadline = std::time::Instant::now() + bound;
    while std::time::Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1.to_string();
                after.trim_start().chars().next()
            });
        if matches!(state, None | Some('Z') | Some('X')) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_key_prefixes_are_valid_and_differ_per_scenario() {
        let a = unique_prefix(Path::new("/tmp/tom-ledger-sim-1-0-happy_path"));
        let b = unique_prefix(Path::new("/tmp/tom-ledger-sim-1-1-happy_path"));
        assert!(a.starts_with("/tom-ledger-sim-1-0-happy_path-"), "{a}");
        assert!(a.ends_with('/') && !a.chars().any(char::is_whitespace));
        assert_ne!(a, b);
        let odd = unique_prefix(Path::new("/tmp/a b\tc"));
        assert!(odd.starts_with("/a_b_c-"), "{odd}");
    }

    #[test]
    fn the_server_is_always_available_etcd_only_with_its_feature() {
        assert!(Backend::File.check_available().is_ok());
        assert!(Backend::Server.check_available().is_ok());
        assert_eq!(
            Backend::Etcd.check_available().is_ok(),
            cfg!(feature = "etcd")
        );
    }
}
