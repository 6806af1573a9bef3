//! Timestamps on disk: written as RFC 3339 UTC with `Z` and milliseconds; read also in the
//! original's format, local time without an offset (`2026-01-22T14:30:45.123456`).

use chrono::{DateTime, Local, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serializer};

use crate::clock::Timestamp;

/// Format a timestamp the way the ledger writes it.
pub fn format(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse a timestamp written by us or by the original.
pub fn parse(s: &str) -> Option<Timestamp> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    match Local.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::None => Some(Utc.from_utc_datetime(&naive)),
    }
}

pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(ts))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp `{s}`")))
}

/// The same for optional timestamps (`null` allowed).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&super::format(ts)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp `{s}`"))),
        }
    }
}

/// Default for timestamps missing from an original file: now, as the original did.
pub fn now() -> Timestamp {
    Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_utc_with_z() {
        let t = parse("2026-01-22T14:30:45.123Z").unwrap();
        assert_eq!(format(&t), "2026-01-22T14:30:45.123Z");
    }

    #[test]
    fn reads_offsets_and_local_times() {
        let t = parse("2026-01-22T15:30:45.123+01:00").unwrap();
        assert_eq!(format(&t), "2026-01-22T14:30:45.123Z");
        let local = parse("2026-01-22T14:30:45.123456").unwrap();
        let expect = Local
            .from_local_datetime(
                &NaiveDateTime::parse_from_str(
                    "2026-01-22T14:30:45.123456",
                    "%Y-%m-%dT%H:%M:%S%.f",
                )
                .unwrap(),
            )
            .single()
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(local, expect);
        assert!(parse("2026-01-22T14:30:45").is_some());
        assert!(parse("yesterday").is_none());
    }
}
