//! The client store of a ledger server (`tom-ledger serve`): the [`Store`] trait over
//! HTTP, so the ledger API works the same on a remote ledger.
//!
//! - [`wire`]: the native API's shapes, shared with the server.
//! - [`RemoteStore`] (`client.rs`): the trait's calls as requests (`http.rs`: token,
//!   deadline, retries with backoff); `feed.rs`: each watched operation's event stream;
//!   `known.rs`: the newest version seen of each operation, where changes start from;
//!   `frames.rs`: a participant's frame changes, sent as data for the server to apply.
//! - [`server_file`]: `server.json`, which discovery reads.

mod ages;
mod client;
mod feed;
mod frames;
mod http;
mod known;
mod probe;
pub mod server_file;
pub mod wire;

pub use ages::{ServerAges, ServerExpired};
pub use client::{RemoteStore, parse_url};
pub use http::RequestTiming;
pub use probe::probe;
pub use server_file::{SERVER_FILE, ServerFile};
