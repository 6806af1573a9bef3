//! Typed handles a store gives out instead of its internals: where an archived operation
//! went ([`ArchiveRef`]) and where a reader of a log is ([`LogCursor`]).

use std::fmt;

use crate::ids::OperationId;

/// Where an operation was archived, as the backend names it (the file store: the
/// archive directory). Shown to people and handed to `on_backup_created`; not a path to
/// act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRef {
    operation: OperationId,
    location: String,
}

impl ArchiveRef {
    pub fn new(operation: OperationId, location: impl Into<String>) -> Self {
        Self {
            operation,
            location: location.into(),
        }
    }

    /// The archived operation.
    pub fn operation(&self) -> &OperationId {
        &self.operation
    }

    /// Where it went, for people to read.
    pub fn location(&self) -> &str {
        &self.location
    }
}

impl fmt::Display for ArchiveRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location)
    }
}

/// A reader's place in an operation's log: hand back what `read_log` returned to go on
/// from there. Opaque: only the backend that made it knows what it counts (the file
/// store: bytes of the whole log across rotated generations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogCursor(u64);

impl LogCursor {
    /// The beginning of the log.
    pub const START: LogCursor = LogCursor(0);

    /// A cursor at `position`, in the backend's own count.
    pub(crate) const fn at(position: u64) -> Self {
        Self(position)
    }

    /// The backend's own count.
    pub(crate) const fn position(self) -> u64 {
        self.0
    }
}
