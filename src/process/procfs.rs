//! Reading `/proc`: the few fields of `/proc/PID/stat` the process layer needs, and a scan
//! of all processes.
//!
//! Everything here treats a vanished process as "not there" rather than as an error: a
//! process can exit between listing `/proc` and reading its files.

use std::fs;

/// The fields of `/proc/PID/stat` we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    /// One letter: `R`, `S`, `D`, `T`, `Z` (zombie), `X` (dead), ...
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start_ticks: u64,
}

impl ProcStat {
    /// A zombie or dead entry: it has exited, only its exit status waits to be reaped.
    pub fn has_exited(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses one `/proc/PID/stat` line.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so the fixed fields are counted from the *last* `)`.
pub(crate) fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = line[..open].trim().parse().ok()?;
    // Fields from 3 (state) on; field N is at index N - 3.
    let rest: Vec<&str> = line[close + 1..].split_ascii_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(ProcStat {
        pid,
        state: *field(3)?.as_bytes().first()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
    })
}

/// The stat of one process, or `None` when there is no such process (any more).
pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    // One read into room for the whole line (`fs::read` asks the size first, which
    // /proc does not know, then reads in growing steps): this runs once per worker.
    let mut file = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut bytes = vec![0u8; 1024];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            bytes.resize(len * 2, 0);
        }
        match std::io::Read::read(&mut file, &mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    parse_stat(&String::from_utf8_lossy(&bytes[..len]))
}

/// The pids of all processes now in `/proc`.
pub(crate) fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The stats of all processes now in `/proc` (those that exit meanwhile are skipped).
pub(crate) fn all_stats() -> Vec<ProcStat> {
    all_pids().into_iter().filter_map(read_stat).collect()
}

/// Whether the initial environment of `pid` holds exactly `entry` (`NAME=value`).
///
/// Descendants inherit the environment across `fork`, `setsid` and `exec`, so this finds
/// them even after they left the process group. Unreadable (exited, other user): `false`.
pub(crate) fn environ_contains(pid: i32, entry: &str) -> bool {
    match fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => env.split(|b| *b == 0).any(|e| e == entry.as_bytes()),
        Err(_) => false,
    }
}

/// The command line of `pid` (program and arguments), empty when it cannot be read
/// (exited, kernel thread).
pub(crate) fn command_line(pid: i32) -> Vec<String> {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) => bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "4242 (sleep) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 2000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_plain_stat() {
        let s = parse_stat(PLAIN).expect("parses");
        assert_eq!(
            (s.pid, s.state, s.ppid, s.pgrp, s.session),
            (4242, b'S', 1, 4242, 4242)
        );
        assert_eq!(s.start_ticks, 987654);
        assert!(!s.has_exited());
    }

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line = PLAIN.replace("(sleep)", "(a) b (c) Z 9 9)");
        let s = parse_stat(&line).expect("parses");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn refuses_truncated_stat() {
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat(")( S"), None);
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id() as i32;
        let s = read_stat(me).expect("own stat");
        assert_eq!(s.pid, me);
        assert!(s.start_ticks > 0);
        assert!(all_pids().contains(&me));
        assert_eq!(read_stat(-1), None);
        assert!(!command_line(me).is_empty());
        assert!(command_line(-1).is_empty());
    }
}
