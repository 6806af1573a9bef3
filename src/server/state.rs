//! What every handler shares: the store it serves, the server's clock, the event
//! streams' shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::store::Store;

use super::beats::Beats;
use super::frames::FrameQueues;
use super::hub::Hubs;
use super::line_order::LineOrder;
use super::write_hold::WriteHolds;

/// The state handed to every route.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The backend served (the file ledger, etcd later): every change goes through it
    /// before the answer.
    pub store: Arc<dyn Store>,
    /// The server's clock: the one time source for remote participants' heartbeats.
    pub clock: SharedClock,
    /// The port the server listens on (reported by `/status`).
    pub port: u16,
    /// The ledger directory served, when it is one (reported by `/status`).
    pub base_path: Option<String>,
    /// Becomes true when the server shuts down: long-lived answers (event streams) end.
    pub shutdown: watch::Receiver<bool>,
    /// How often an idle event stream sends a ping line.
    pub ping_interval: Duration,
    /// Heartbeats of remote participants, by the server's clock.
    pub beats: Arc<Beats>,
    /// The shared feeds of the operations that event streams watch.
    pub hubs: Arc<Hubs>,
    /// Writes with log lines take turns per operation, so their lines keep their order.
    pub line_order: Arc<LineOrder>,
    /// Frame changes waiting for their operation's next write (`frames.rs`).
    pub frame_queues: Arc<FrameQueues>,
    /// Frame writes wait for a refused whole-document writer (`write_hold.rs`).
    pub write_holds: Arc<WriteHolds>,
}
