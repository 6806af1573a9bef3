//! The client store of a ledger server (`tom-ledger serve`): the [`Store`] trait over
//! HTTP, so the ledger API works the same on a remote ledger.
//!
//! - [`wire`]: the native API's shapes, shared with the server.
//! - [`server_file`]: `server.json`, which discovery reads.

pub mod server_file;
pub mod wire;

pub use server_file::{SERVER_FILE, ServerFile};
