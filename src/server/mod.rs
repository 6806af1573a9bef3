//! `tom-ledger serve`: the ledger over HTTP, so participants on other machines share
//! operations through one server.
//!
//! - [`state`]: what every handler shares (an `Arc<dyn Store>`: the server works over
//!   any backend).
//! - [`router`]: the one function that puts routes and layers together; more routes
//!   (the status page, the original's endpoints) merge there.
//! - [`native`] and [`events`]: the native API under `/v1/` and its event streams;
//!   [`hub`]: one shared feed per watched operation behind all its streams;
//!   [`line_order`]: writes that carry log lines take turns per operation.
//! - [`compat`]: the original's 15 endpoints over the same core and store.
//! - [`beats`]: remote participants' heartbeats, stamped with the server's clock.
//! - [`auth`]: the bearer token. [`errors`]: `{"error": ...}` answers.
//! - [`page`]: the status page at `GET /` (its own API under `/page/api/`).
//! - [`discovery`]: `/status` and the `server.json` file. [`listen`]: the accept loop
//!   with slow-client timeouts and a bounded graceful shutdown.
//!
//! The server is data in, data out: it stops no process and deletes no temp resource
//! (participants do, under their own proof rules).

pub mod auth;
pub mod beats;
pub mod compat;
pub mod discovery;
pub mod errors;
pub mod events;
pub mod frames;
pub mod hub;
pub mod line_order;
pub mod listen;
pub mod native;
pub mod page;
pub mod router;
pub mod state;
pub mod write_hold;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::store::Store;

pub use auth::Auth;
pub use listen::ConnectionLimits;
pub use router::Limits;

/// The default port (the original's).
pub const DEFAULT_PORT: u16 = 19880;

/// How a server is started.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address and port to listen on (port 0: any free port).
    pub bind: SocketAddr,
    pub auth: Auth,
    /// The ledger directory served, if any: `/status` reports it and `server.json` is
    /// written into it.
    pub ledger_dir: Option<PathBuf>,
    pub limits: Limits,
    pub connections: ConnectionLimits,
    /// Interval of `ping` lines on an idle event stream.
    pub ping_interval: Duration,
    pub clock: SharedClock,
}

impl ServeOptions {
    pub fn new(bind: SocketAddr, auth: Auth) -> Self {
        Self {
            bind,
            auth,
            ledger_dir: None,
            limits: Limits::default(),
            connections: ConnectionLimits::default(),
            ping_interval: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A server that runs until [`shutdown`](RunningServer::shutdown).
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    _discovery: Option<discovery::DiscoveryFile>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, end event streams, let requests in flight finish (bounded), and
    /// remove `server.json`.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Start serving `store`; returns once the server listens.
pub async fn start(store: Arc<dyn Store>, options: ServeOptions) -> Result<RunningServer> {
    if matches!(options.auth, Auth::Open) {
        auth::check_open_bind(options.bind.ip())?;
    }
    let listener = TcpListener::bind(options.bind)
        .await
        .map_err(|e| Error::invalid(format!("bind address `{}`", options.bind), e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::invalid(format!("bind address `{}`", options.bind), e.to_string()))?;
    let (stop, stopped) = watch::channel(false);
    let beats = Arc::new(beats::Beats::default());
    tokio::spawn(beats::write_through(
        beats.clone(),
        store.clone(),
        options.clock.clone(),
        stopped.clone(),
    ));
    let state = state::AppState {
        store,
        clock: options.clock.clone(),
        port: addr.port(),
        base_path: options.ledger_dir.as_ref().map(|d| d.display().to_string()),
        shutdown: stopped.clone(),
        ping_interval: options.ping_interval,
        beats: beats.clone(),
        hubs: Arc::new(hub::Hubs::default()),
        line_order: Arc::new(line_order::LineOrder::default()),
        frame_queues: Arc::new(frames::FrameQueues::default()),
        write_holds: Arc::new(write_hold::WriteHolds::default()),
    };
    let app = router::app(state, options.auth.clone(), options.limits);
    let url = format!("http://{addr}");
    let discovery = match &options.ledger_dir {
        Some(dir) => Some(discovery::DiscoveryFile::write(dir, &url)?),
        None => None,
    };
    let task = tokio::spawn(listen::serve(listener, app, options.connections, stopped));
    Ok(RunningServer {
        addr,
        stop,
        task,
        _discovery: discovery,
    })
}
