//! The file ledger's bounds, from the environment: they reach nested `tom-ledger`
//! processes (workers of a `run`) with no flags, so every process of an operation writes
//! its ledger under the same bounds.
//!
//! - `TOM_LEDGER_LOCK_TIMEOUT`: longest wait for an operation's lock (duration, `10s`).
//! - `TOM_LEDGER_TRAIL_KEEP`: trail entries kept per operation (`200`, 0 disables).
//! - `TOM_LEDGER_TRAIL_MAX_BYTES`: trail bytes per operation (`8M`, 0 for no byte bound).
//! - `TOM_LEDGER_LOG_MAX_BYTES`: log size that triggers rotation (`16M`, 0 never).

use tom_dist_ledger::store::FileStoreOptions;

use super::args::parse_duration;
use super::exit::{CliResult, Failure};

/// The store options, defaults overridden by the environment; a bad value is a usage error.
pub fn from_env() -> CliResult<FileStoreOptions> {
    let mut options = FileStoreOptions::default();
    if let Some(v) = var("TOM_LEDGER_LOCK_TIMEOUT")? {
        let d = parse_duration(&v).map_err(|e| invalid("TOM_LEDGER_LOCK_TIMEOUT", &e))?;
        options.lock_timeout = d;
    }
    if let Some(v) = var("TOM_LEDGER_TRAIL_KEEP")? {
        options.trail_keep = v
            .trim()
            .parse()
            .map_err(|_| invalid("TOM_LEDGER_TRAIL_KEEP", &format!("`{v}` is not a count")))?;
    }
    if let Some(v) = var("TOM_LEDGER_TRAIL_MAX_BYTES")? {
        options.trail_max_bytes =
            parse_size(&v).map_err(|e| invalid("TOM_LEDGER_TRAIL_MAX_BYTES", &e))?;
    }
    if let Some(v) = var("TOM_LEDGER_LOG_MAX_BYTES")? {
        options.log_max_bytes =
            parse_size(&v).map_err(|e| invalid("TOM_LEDGER_LOG_MAX_BYTES", &e))?;
    }
    Ok(options)
}

fn var(name: &str) -> CliResult<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(invalid(
            name,
            &format!("`{}` is not valid UTF-8", v.to_string_lossy()),
        )),
    }
}

fn invalid(name: &str, reason: &str) -> Failure {
    Failure::usage(format!("invalid {name}: {reason}"))
}

/// A size in bytes: `4096`, or with a binary unit `64K`, `8M`, `1G` (also `KiB`, `MiB`,
/// `GiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let refuse = || format!("`{text}` is not a size such as 4096, 64K, 8M or 1G");
    let value: u64 = number.parse().map_err(|_| refuse())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(refuse()),
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "-1", "1.5M", "8T", "8 parsecs"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(
            parse_size("99999999999999999G")
                .unwrap_err()
                .contains("too large")
        );
    }
}
