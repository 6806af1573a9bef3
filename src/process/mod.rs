//! Processes: identity, groups, the stop ladder.
pub mod identity;
