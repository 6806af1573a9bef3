//! Shared by the worker executables: argument handling and the safety exit.
//!
//! Every worker accepts and ignores `--marker X`, so tests can find all processes of one
//! test (forked children keep the parent's argv) in `/proc/*/cmdline`.

#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

/// Seconds after which a worker that would otherwise hang exits on its own.
pub const SAFETY_SECS: u32 = 120;

/// The arguments after the program name, without `--marker X`.
pub fn args() -> Vec<String> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--marker" {
            it.next();
        } else {
            out.push(a);
        }
    }
    out
}

/// Whether `flag` is among `args`.
pub fn flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

/// The value after `name` in `args`, parsed.
pub fn value<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// The first argument that is not an option or an option's value.
pub fn positional(args: &[String], with_values: &[&str]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if with_values.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with("--") {
            return Some(a.clone());
        }
    }
    None
}

/// Exits the process (SIGALRM) after [`SAFETY_SECS`], so nothing lingers if a test dies.
/// Call again in every forked child: alarms are not inherited across `fork`.
pub fn arm_safety_exit() {
    // SAFETY: alarm(2) only schedules a signal.
    unsafe {
        libc::alarm(SAFETY_SECS);
    }
}

/// Ignores SIGTERM from now on.
pub fn ignore_term() {
    // SAFETY: installing SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

/// Prints one line to stdout and flushes it.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits until a signal ends the process (or the safety alarm does).
pub fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Forks; the child runs `child` and then exits.
pub fn fork(child: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the workers are single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("fork failed: {}", std::io::Error::last_os_error());
        std::process::exit(70);
    }
    if pid == 0 {
        arm_safety_exit();
        child();
        // SAFETY: leaving the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}
