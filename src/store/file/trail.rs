//! The trail: `{op}_trail/{seq:08}_{op}.json` holds the operation file as it was before
//! modification `seq`, so a damaged ledger can be restored by hand. Entries are made by
//! the swap that puts each new version in place (see `replace.rs`).
//!
//! Bounds: at most `trail_keep` entries and `trail_max_bytes` bytes; the oldest entries
//! go first. Writes that only refresh heartbeats make no entry (the next meaningful
//! write snapshots the file they left), so the trail holds the state before each of the
//! recent meaningful modifications and entry numbers have gaps. To know what the trail
//! holds without listing it, each writer leaves a [`TrailState`] in the lock file (see
//! `lock.rs`); a state written for another `seq` than the file's (its writer died, or
//! wrote with the trail disabled) is recounted from the directory.
//!
//! Names come from `seq`, which only the lock holder moves, so they never collide. The
//! lock holder decides which entries go and updates the state; the files themselves are
//! removed after the lock is released (removal frees inodes, which is slow). A writer
//! that died before removing them leaves entries below the state's `from`: every
//! `trail_keep`-th write sweeps those. A writer that died between staging and swapping
//! leaves an entry numbered above the operation's `seq`: the next writer of that `seq`
//! replaces it, and archiving drops it.

use std::fs;

use super::lock::OpLock;
use super::paths::{self, Paths};
use super::trust;
use crate::ids::OperationId;

/// What the trail holds: entries numbered `from..=seq` at most, `entries` of them
/// existing, `bytes` in all; valid for the operation file of that `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrailState {
    pub seq: u64,
    pub from: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// The bounds of a trail.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Entries kept; 0 disables the trail.
    pub keep: u64,
    /// Bytes kept; 0 for no byte bound.
    pub max_bytes: u64,
}

/// Decided under the lock for one write.
#[derive(Debug, Default)]
pub struct Plan {
    /// The entry this write makes (the replaced file), if any.
    pub entry: Option<u64>,
    /// Entries that go, oldest first (the first may be recycled as the staging file).
    pub doomed: Vec<u64>,
    /// The state after the write.
    pub state: Option<TrailState>,
}

const NOTE_TAG: &str = "tom-ledger-trail";

impl TrailState {
    /// Fixed-length text, so that writing it over the last one leaves nothing behind.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{NOTE_TAG} seq={:020} from={:020} entries={:020} bytes={:020}\n",
            self.seq, self.from, self.entries, self.bytes
        )
        .into_bytes()
    }

    pub fn decode(note: &[u8]) -> Option<TrailState> {
        let text = std::str::from_utf8(note).ok()?;
        let line = text.lines().next()?;
        let mut fields = line.split(' ');
        if fields.next()? != NOTE_TAG {
            return None;
        }
        let mut value = |key: &str| -> Option<u64> {
            fields
                .next()?
                .strip_prefix(key)?
                .strip_prefix('=')?
                .parse()
                .ok()
        };
        Some(TrailState {
            seq: value("seq")?,
            from: value("from")?,
            entries: value("entries")?,
            bytes: value("bytes")?,
        })
    }
}

/// What the trail of `op` holds for the operation file at `seq`: the lock's note when it
/// is current, else counted from the directory. Runs under the lock.
pub fn current(paths: &Paths, op: &OperationId, lock: &OpLock, seq: u64) -> TrailState {
    match TrailState::decode(&lock.read_note()) {
        Some(state) if state.seq == seq => state,
        _ => count(paths, op, seq),
    }
}

/// Count the entries numbered up to `seq` and their bytes.
fn count(paths: &Paths, op: &OperationId, seq: u64) -> TrailState {
    let mut state = TrailState {
        seq,
        from: seq + 1,
        entries: 0,
        bytes: 0,
    };
    let Ok(entries) = fs::read_dir(paths.trail_dir(op)) else {
        return state;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(paths::trail_seq) else {
            continue;
        };
        if n > seq {
            continue;
        }
        if let Ok(meta) = entry.metadata() {
            state.from = state.from.min(n);
            state.entries += 1;
            state.bytes += meta.len();
        }
    }
    state
}

/// Decide, under the lock, what write `seq` does to the trail: whether the replaced file
/// (`old_len` bytes) becomes entry `seq` (`record`: not for heartbeat-only writes, nor
/// for a file larger than the byte bound), and which old entries go to respect `bounds`.
pub fn plan(
    paths: &Paths,
    op: &OperationId,
    lock: &OpLock,
    seq: u64,
    old_len: u64,
    record: bool,
    bounds: Bounds,
) -> Plan {
    if bounds.keep == 0 {
        return Plan::default();
    }
    let mut state = current(paths, op, lock, seq - 1);
    state.seq = seq;
    let record = record && (bounds.max_bytes == 0 || old_len <= bounds.max_bytes);
    if record {
        state.entries += 1;
        state.bytes += old_len;
    }
    let over = |s: &TrailState| {
        s.entries > bounds.keep || (bounds.max_bytes > 0 && s.bytes > bounds.max_bytes)
    };
    let mut doomed = Vec::new();
    let mut misses = 0;
    // The entry made now is numbered `seq`: older ones are below it.
    while over(&state) && state.from < seq {
        if misses >= MAX_MISSES {
            // A long gap (many heartbeat-only writes, or numbers from a damaged note):
            // find the next entry by listing rather than step by step.
            misses = 0;
            match next_entry(paths, op, state.from, seq) {
                Some(n) => state.from = n,
                None => {
                    state.from = seq;
                    break;
                }
            }
        }
        let n = state.from;
        state.from += 1;
        match fs::symlink_metadata(paths.trail_entry(op, n)) {
            Ok(meta) => {
                state.entries = state.entries.saturating_sub(1);
                state.bytes = state.bytes.saturating_sub(meta.len());
                doomed.push(n);
                misses = 0;
            }
            Err(_) => misses += 1,
        }
    }
    if state.from >= seq || state.entries == u64::from(record) {
        // Nothing older is left: recount from what this write makes (this also heals a
        // state thrown off by entries removed by hand).
        state.entries = u64::from(record);
        state.bytes = if record { old_len } else { 0 };
        state.from = if record { seq } else { seq + 1 };
    }
    Plan {
        entry: record.then_some(seq),
        doomed,
        state: Some(state),
    }
}

/// Missing entries stepped over before the trail is listed instead.
const MAX_MISSES: u32 = 32;

/// The lowest entry numbered in `from..below`.
fn next_entry(paths: &Paths, op: &OperationId, from: u64, below: u64) -> Option<u64> {
    fs::read_dir(paths.trail_dir(op))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(paths::trail_seq))
        .filter(|n| (from..below).contains(n))
        .min()
}

/// Remove what the plan doomed (after the lock is released; failures are left to the
/// sweep), and every `keep`-th write sweep entries below the trail's start.
pub fn prune(paths: &Paths, op: &OperationId, plan: &Plan, keep: u64, moved: Option<u64>) {
    for &n in plan.doomed.iter().filter(|&&n| Some(n) != moved) {
        let _ = fs::remove_file(paths.trail_entry(op, n));
    }
    if let Some(state) = plan.state
        && keep > 0
        && state.seq.is_multiple_of(keep)
    {
        remove_entries(paths, op, |n| n < state.from);
    }
}

/// Remove the trail entries whose `seq` matches `doomed`; nothing in a trail directory
/// that is a symlink or not this user's.
pub fn remove_entries(paths: &Paths, op: &OperationId, doomed: impl Fn(u64) -> bool) {
    if !trust::is_own_dir(&paths.trail_dir(op)) {
        return;
    }
    let Ok(entries) = fs::read_dir(paths.trail_dir(op)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .and_then(paths::trail_seq)
            .is_some_and(&doomed)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_survives_its_note() {
        let state = TrailState {
            seq: 42,
            from: 7,
            entries: 30,
            bytes: 123_456,
        };
        let note = state.encode();
        assert_eq!(TrailState::decode(&note), Some(state));
        let bigger = TrailState {
            seq: u64::MAX,
            ..state
        };
        assert_eq!(bigger.encode().len(), note.len(), "fixed length");
        assert_eq!(TrailState::decode(b""), None);
        assert_eq!(TrailState::decode(b"{\"pid\": 4}"), None);
    }
}
