//! Temp-resource paths: the form they are registered in, what they may never be, and how
//! they are deleted. Every deletion of a temp resource (failure cleanup, crash handling,
//! recovery, the signal handler) goes through [`remove`], which checks the refusal rules
//! again with fresh facts, since a path read back from a ledger is input, not proof.
//!
//! Below both the ledger and the signal cleanup; knows nothing about operations.

mod normalise;
mod protected;
mod remove;

pub use normalise::normalise;
pub use protected::{Protected, Refusal};
pub use remove::{Removal, remove, remove_stored};
