//! [`BoxFuture`]: the boxed future that stored callbacks return.
//!
//! It lives at the bottom of the crate because callbacks are stored at several layers
//! (the signal cleanup below the ledger, the ledger's call and operation callbacks): each
//! names it from here, none from a layer above it.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, as stored callbacks return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
