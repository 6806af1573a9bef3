//! [`Connect`]: how to reach a ledger and the settings every operation of it shares.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::ids::ParticipantId;
use crate::store::{FileStoreOptions, Store};

use super::callbacks::LedgerCallback;
use super::discover::Discovery;
use super::exec::{ENV_LEDGER_DIR, ENV_LEDGER_ETCD, ENV_LEDGER_ETCD_PREFIX, ENV_LEDGER_URL};

/// The token of a remote ledger, for clients and for the workers of a remote run.
pub const ENV_LEDGER_TOKEN: &str = "TOM_LEDGER_TOKEN";

/// The value of `TOM_LEDGER_URL` / `--server` that asks for discovery.
pub const AUTO: &str = "auto";

/// Default interval between heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default age after which a participant counts as stale.
pub const DEFAULT_STALE_THRESHOLD: Duration = Duration::from_secs(15);
/// Default longest pause (job control) a peer on another machine is excused for.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(3600);

pub(crate) enum Target {
    /// A ledger directory; `create: false` opens only one that exists, creating nothing.
    Local {
        dir: PathBuf,
        create: bool,
    },
    Store(Arc<dyn Store>),
    /// An etcd cluster.
    #[cfg(feature = "etcd")]
    Etcd {
        endpoints: Vec<String>,
        options: crate::store::EtcdOptions,
    },
    /// A ledger server at a URL, or the one discovery finds.
    Remote(RemoteTarget),
}

/// Where a remote ledger is.
pub(crate) enum RemoteTarget {
    Url(String),
    Discover(Discovery),
}

/// How to connect to a ledger, and with which settings.
pub struct Connect {
    pub(crate) target: Target,
    pub(crate) participant: Option<ParticipantId>,
    pub(crate) pid: Option<i32>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_jitter: Duration,
    pub(crate) stale_threshold: Duration,
    pub(crate) cleanup_wait: Option<Duration>,
    pub(crate) worker_grace: Duration,
    pub(crate) max_pause: Duration,
    pub(crate) recover_abandoned: bool,
    pub(crate) file_options: FileStoreOptions,
    pub(crate) callback: LedgerCallback,
    pub(crate) clock: SharedClock,
    pub(crate) host: Option<String>,
    /// The bearer token of a remote ledger.
    pub(crate) token: Option<String>,
}

impl Connect {
    /// The ledger served by `tom-ledger serve` at `url` (`http://host:port`); the token
    /// is given with [`token`](Self::token).
    pub fn remote(url: impl Into<String>) -> Self {
        Self::with_target(Target::Remote(RemoteTarget::Url(url.into())))
    }

    /// The ledger server discovery finds: `server.json` of the ledger directory
    /// (`TOM_LEDGER_DIR`, else `_ai/operation_ledger`), then `127.0.0.1:19880`. Its
    /// token is read beside its ledger on this machine unless given.
    pub fn discover() -> Self {
        let dir = std::env::var_os(ENV_LEDGER_DIR)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("_ai/operation_ledger"));
        Self::discover_with(Discovery {
            ledger_dir: Some(dir),
            ..Discovery::default()
        })
    }

    /// Discovery with its settings spelled out (a ledger directory, hosts or a subnet to
    /// scan, limits).
    pub fn discover_with(discovery: Discovery) -> Self {
        Self::with_target(Target::Remote(RemoteTarget::Discover(discovery)))
    }

    /// The bearer token of a remote ledger (`tom-ledger serve` prints where it is).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    /// The embedded ledger in a directory (created if missing).
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self::with_target(Target::Local {
            dir: dir.into(),
            create: true,
        })
    }

    /// The embedded ledger in a directory that must exist: nothing is created in it (for
    /// tools that only read or inspect).
    pub fn existing(dir: impl Into<PathBuf>) -> Self {
        Self::with_target(Target::Local {
            dir: dir.into(),
            create: false,
        })
    }

    /// The ledger a worker's parent named in the environment: [`ENV_LEDGER_DIR`], else
    /// [`ENV_LEDGER_ETCD`] (with [`ENV_LEDGER_ETCD_PREFIX`]), else [`ENV_LEDGER_URL`]
    /// (`auto`: discovery) with the token of [`ENV_LEDGER_TOKEN`]. `None` when none is set
    /// (empty counts as unset).
    pub fn from_env() -> Result<Option<Connect>> {
        if let Some(dir) = std::env::var_os(ENV_LEDGER_DIR).filter(|d| !d.is_empty()) {
            return Ok(Some(Connect::local(dir)));
        }
        if let Some(list) = std::env::var_os(ENV_LEDGER_ETCD).filter(|e| !e.is_empty()) {
            let prefix = std::env::var_os(ENV_LEDGER_ETCD_PREFIX).filter(|p| !p.is_empty());
            return Connect::etcd_from_env(&list, prefix.as_deref()).map(Some);
        }
        let Some(url) = std::env::var_os(ENV_LEDGER_URL).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let url = url.into_string().map_err(|u| {
            Error::invalid(
                format!("{ENV_LEDGER_URL} `{}`", u.to_string_lossy()),
                "not valid UTF-8",
            )
        })?;
        let mut connect = if url == AUTO {
            Connect::discover()
        } else {
            crate::store::remote::parse_url(&url)?;
            Connect::remote(url)
        };
        if let Some(token) = std::env::var(ENV_LEDGER_TOKEN)
            .ok()
            .filter(|t| !t.is_empty())
        {
            connect = connect.token(token);
        }
        Ok(Some(connect))
    }

    /// An etcd ledger from a comma-separated endpoint list and a key prefix (`None`:
    /// the default), as `--etcd`, [`ENV_LEDGER_ETCD`] and [`ENV_LEDGER_ETCD_PREFIX`] hold
    /// them; refused by a build without the `etcd` feature.
    #[cfg(feature = "etcd")]
    pub fn etcd_from_list(list: &str, prefix: Option<&str>) -> Result<Connect> {
        let endpoints = crate::store::etcd::parse_endpoints(list)?;
        let mut options = crate::store::EtcdOptions::default();
        if let Some(prefix) = prefix {
            crate::store::etcd::Keys::new(prefix)?;
            options.prefix = prefix.to_string();
        }
        Ok(Connect::etcd_with(endpoints, options))
    }

    #[cfg(not(feature = "etcd"))]
    pub fn etcd_from_list(list: &str, _prefix: Option<&str>) -> Result<Connect> {
        Err(Error::invalid(
            format!("etcd endpoints `{list}`"),
            "etcd ledgers are not supported by this build (cargo feature `etcd`)",
        ))
    }

    fn etcd_from_env(list: &std::ffi::OsStr, prefix: Option<&std::ffi::OsStr>) -> Result<Connect> {
        let text = |name: &str, value: &std::ffi::OsStr| {
            value.to_str().map(str::to_owned).ok_or_else(|| {
                Error::invalid(
                    format!("{name} `{}`", value.to_string_lossy()),
                    "is not valid UTF-8",
                )
            })
        };
        let prefix = prefix
            .map(|p| text(ENV_LEDGER_ETCD_PREFIX, p))
            .transpose()?;
        Connect::etcd_from_list(&text(ENV_LEDGER_ETCD, list)?, prefix.as_deref())
    }

    /// An etcd ledger at `endpoints` (`host:port` or `http://host:port`, any member of
    /// one cluster) under the default key prefix.
    #[cfg(feature = "etcd")]
    pub fn etcd<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self::etcd_with(endpoints, crate::store::EtcdOptions::default())
    }

    /// An etcd ledger with its own settings (key prefix, retention, deadline).
    #[cfg(feature = "etcd")]
    pub fn etcd_with<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        options: crate::store::EtcdOptions,
    ) -> Self {
        Self::with_target(Target::Etcd {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            options,
        })
    }

    /// The etcd endpoints, for an etcd ledger.
    pub fn etcd_endpoints(&self) -> Option<&[String]> {
        match &self.target {
            #[cfg(feature = "etcd")]
            Target::Etcd { endpoints, .. } => Some(endpoints),
            _ => None,
        }
    }

    /// The key prefix, for an etcd ledger.
    pub fn etcd_prefix(&self) -> Option<&str> {
        match &self.target {
            #[cfg(feature = "etcd")]
            Target::Etcd { options, .. } => Some(&options.prefix),
            _ => None,
        }
    }

    /// The ledger directory, for a local ledger.
    pub fn local_dir(&self) -> Option<&Path> {
        match &self.target {
            Target::Local { dir, .. } => Some(dir),
            _ => None,
        }
    }

    /// Any store (a backend built by hand).
    pub fn store(store: Arc<dyn Store>) -> Self {
        Self::with_target(Target::Store(store))
    }

    fn with_target(target: Target) -> Self {
        Self {
            target,
            participant: None,
            pid: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_jitter: Duration::from_millis(500),
            stale_threshold: DEFAULT_STALE_THRESHOLD,
            cleanup_wait: None,
            worker_grace: crate::process::DEFAULT_GRACE,
            max_pause: DEFAULT_MAX_PAUSE,
            recover_abandoned: false,
            file_options: FileStoreOptions::default(),
            callback: LedgerCallback::default(),
            clock: Arc::new(SystemClock),
            host: None,
            token: None,
        }
    }

    /// This process's participant id (default `participant-{pid}`).
    pub fn participant(mut self, id: ParticipantId) -> Self {
        self.participant = Some(id);
        self
    }

    /// The pid recorded for this participant (default: this process).
    pub fn pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }

    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }

    pub fn heartbeat_jitter(mut self, d: Duration) -> Self {
        self.heartbeat_jitter = d;
        self
    }

    /// The one age after which a participant's heartbeat counts as stale (default 15 s),
    /// for every judgement of this connection: each beat's stale list, joins, failure
    /// cleanups and recovery. `Operation::set_staleness_threshold` changes this same
    /// threshold later.
    pub fn stale_threshold(mut self, d: Duration) -> Self {
        self.stale_threshold = d;
        self
    }

    /// How long a failing operation waits for live participants to clean up
    /// (default: two heartbeat intervals).
    pub fn cleanup_wait(mut self, d: Duration) -> Self {
        self.cleanup_wait = Some(d);
        self
    }

    /// Grace between SIGTERM and SIGKILL when workers are stopped (default 5 s): for
    /// every operation of this ledger, unless set for one (`Operation::set_worker_grace`),
    /// and for the workers recovery stops.
    pub fn worker_grace(mut self, d: Duration) -> Self {
        self.worker_grace = d;
        self
    }

    /// Recover abandoned operations when connecting (default off), as `tom-ledger run`
    /// does before it starts: only operations proven to come from this host, boot, PID
    /// namespace and user are cleaned up (see [`Ledger::recover_automatically`]); the
    /// others are listed as left alone. What was done is in [`Ledger::connect_recovery`].
    ///
    /// [`Ledger::recover_automatically`]: super::Ledger::recover_automatically
    /// [`Ledger::connect_recovery`]: super::Ledger::connect_recovery
    pub fn recover_abandoned(mut self, on: bool) -> Self {
        self.recover_abandoned = on;
        self
    }

    /// Archived operations kept (file store).
    pub fn max_backups(mut self, n: usize) -> Self {
        self.file_options.max_backups = n;
        self
    }

    /// Trail snapshots kept per operation, 0 to disable (file store).
    pub fn trail_keep(mut self, n: u64) -> Self {
        self.file_options.trail_keep = n;
        self
    }

    /// Bytes the trail of one operation may hold, 0 for no byte bound (file store).
    pub fn trail_max_bytes(mut self, n: u64) -> Self {
        self.file_options.trail_max_bytes = n;
        self
    }

    /// Size past which a live log is rotated to `{log}.1`, 0 never (file store).
    pub fn log_max_bytes(mut self, n: u64) -> Self {
        self.file_options.log_max_bytes = n;
        self
    }

    /// Longest wait for an operation's lock before a write fails (file store).
    pub fn lock_timeout(mut self, d: Duration) -> Self {
        self.file_options.lock_timeout = d;
        self
    }

    /// Every file store setting at once.
    pub fn file_store_options(mut self, options: FileStoreOptions) -> Self {
        self.file_options = options;
        self
    }

    /// fsync every write (file store).
    pub fn durable(mut self, on: bool) -> Self {
        self.file_options.durable = on;
        self
    }

    pub fn callback(mut self, callback: LedgerCallback) -> Self {
        self.callback = callback;
        self
    }

    /// How long a participant on another machine that recorded a pause (stopped by job
    /// control, see [`Ledger::set_paused`](super::Ledger::set_paused)) is excused from the
    /// heartbeat judgement, counted from when it paused (default one hour). After that
    /// it is judged by heartbeat age again: declared crashed and fenced. A paused
    /// participant on this machine is judged by its pid instead, for as long as it lasts.
    pub fn max_pause(mut self, d: Duration) -> Self {
        self.max_pause = d;
        self
    }

    /// The host name recorded for this participant (default: the machine's). Peers that
    /// record another host are judged as on another machine: by presence (heartbeat age,
    /// an etcd lease), never by pid, and never signalled. For several participants of one
    /// machine that stand for different hosts (containers, simulations, tests).
    pub fn host(mut self, name: impl Into<String>) -> Self {
        self.host = Some(name.into());
        self
    }

    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

/// Settings every operation of a ledger shares.
pub(crate) struct LedgerConfig {
    pub participant: ParticipantId,
    pub pid: i32,
    pub heartbeat_interval: Duration,
    pub heartbeat_jitter: Duration,
    pub cleanup_wait: Duration,
    /// Default grace for stopping workers (see [`Connect::worker_grace`]).
    pub worker_grace: Duration,
    /// The token of a remote ledger, handed to workers with its URL.
    pub remote_token: Option<String>,
}
