//! Operation, participant and call ids: generation and validation.
//!
//! Ids end up in file names, so every id that comes from outside (CLI, HTTP, environment,
//! a ledger file) goes through [`validate`] before it touches a path: only
//! `[A-Za-z0-9_.:-]`, 1 to 128 characters, no `..`, no leading `.`. Generated ids contain no
//! colon, so they are valid file names everywhere.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest accepted operation or participant id.
pub const MAX_ID_LEN: usize = 128;
/// Call ids embed a participant id, so they may be a little longer.
pub const MAX_CALL_ID_LEN: usize = MAX_ID_LEN + 48;

/// Check an id from outside. `kind` names it in the error ("operation", "participant", ...).
pub fn validate(kind: &'static str, value: &str, max_len: usize) -> Result<()> {
    let refuse = |reason| {
        Err(Error::InvalidId {
            kind,
            value: value.chars().take(200).collect(),
            reason,
        })
    };
    if value.is_empty() {
        return refuse("must not be empty");
    }
    if value.len() > max_len {
        return refuse("is too long");
    }
    if value.starts_with('.') {
        return refuse("must not start with `.`");
    }
    if value.contains("..") {
        return refuse("must not contain `..`");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return refuse("may only contain letters, digits, `_`, `.`, `:` and `-`");
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate an id that comes from outside.
            pub fn parse(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                validate($kind, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// Id of an operation: `YYYYMMDDTHHMMSS.mmm-{participant}-{8 hex}` when generated.
    OperationId, "operation", MAX_ID_LEN
);
id_type!(
    /// Id of a participant, such as `cli`, `bridge` or `run-4242`.
    ParticipantId, "participant", MAX_ID_LEN
);
id_type!(
    /// Id of a call: `call_{participant}_{n}_{4 hex}` when generated.
    CallId, "call", MAX_CALL_ID_LEN
);

impl OperationId {
    /// A fresh id: UTC time to the millisecond, the creator, and 32 random bits.
    pub fn generate(participant: &ParticipantId, now: DateTime<Utc>) -> Self {
        let hex: u32 = rand::random();
        Self(format!(
            "{}-{}-{:08x}",
            now.format("%Y%m%dT%H%M%S%.3f"),
            participant,
            hex
        ))
    }
}

impl CallId {
    /// A fresh call id from a per-process counter and 16 random bits.
    pub fn generate(participant: &ParticipantId) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let hex: u16 = rand::random();
        Self(format!("call_{participant}_{n}_{hex:04x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unsafe_ids() {
        for bad in [
            "",
            "../..",
            "..",
            "/abs",
            "a/b",
            "test<script>",
            ".hidden",
            "a..b",
            "sp ace",
            "tab\t",
            "nul\0",
            "ünï",
            "a\\b",
        ] {
            let err = OperationId::parse(bad).expect_err(bad);
            assert!(err.to_string().starts_with("invalid operation id"), "{err}");
        }
        assert!(OperationId::parse("x".repeat(129)).is_err());
        assert!(ParticipantId::parse("a/b").is_err());
        assert!(CallId::parse("../c").is_err());
    }

    #[test]
    fn accepts_the_original_examples() {
        for good in [
            "20260125T12:30:45.123-cli-abcd1234",
            "simple_test",
            "test-with-dashes",
            "test.with.dots",
            "TEST_123:456",
        ] {
            OperationId::parse(good).expect(good);
        }
        assert!(OperationId::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn generated_ids_are_valid_and_colon_free() {
        let p = ParticipantId::parse("cli").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-01-22T14:30:45.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let op = OperationId::generate(&p, now);
        assert!(op.as_str().starts_with("20260122T143045.123-cli-"), "{op}");
        assert!(!op.as_str().contains(':'));
        OperationId::parse(op.as_str()).unwrap();
        let a = CallId::generate(&p);
        let b = CallId::generate(&p);
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("call_cli_"));
        CallId::parse(a.as_str()).unwrap();
    }

    #[test]
    fn error_carries_the_value() {
        let err = ParticipantId::parse("a b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid participant id `a b`: may only contain letters, digits, `_`, `.`, `:` and `-`"
        );
    }
}
