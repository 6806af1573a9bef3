//! [`Revision`]: the version of a stored operation that a compare-and-swap names.
//!
//! It sits below the store and the error type (a conflict carries two of them). Every
//! backend maps it onto what it has: the file store's `seq`, a server's `ETag`, etcd's
//! `mod_revision`. Callers only compare revisions and hand them back; they never count.

use std::fmt;

/// The version of one operation as stored; every write moves it forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(u64);

impl Revision {
    /// The revision a backend stores as `value` (the file store: the operation's `seq`).
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The value as the backend stores it.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The revision a write on top of this one produces (saturating: a revision read
    /// from a ledger is input).
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Revision;

    #[test]
    fn next_moves_forward_and_saturates() {
        assert_eq!(Revision::new(4).next(), Revision::new(5));
        assert!(Revision::new(5) > Revision::new(4));
        assert_eq!(Revision::new(u64::MAX).next(), Revision::new(u64::MAX));
        assert_eq!(Revision::new(7).to_string(), "7");
    }
}
