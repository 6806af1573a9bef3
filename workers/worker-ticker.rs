//! Prints `tick N` every few milliseconds until a file appears, then `done` and exits 0.
//!
//! ```text
//! worker-ticker STOP_FILE [--every-ms N]     (default 5 ms)
//! ```
//! Used by the job-control tests: its output stops growing while it is stopped.
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

fn main() {
    common::arm_safety_exit();
    let args = common::args();
    let Some(stop) = common::positional(&args, &["--every-ms"]).map(PathBuf::from) else {
        eprintln!("worker-ticker: usage: worker-ticker STOP_FILE [--every-ms N]");
        std::process::exit(2);
    };
    let every = Duration::from_millis(common::value(&args, "--every-ms").unwrap_or(5));
    let mut out = std::io::stdout().lock();
    let mut n: u64 = 0;
    while !stop.exists() {
        n += 1;
        if writeln!(out, "tick {n}").and_then(|_| out.flush()).is_err() {
            std::process::exit(1);
        }
        std::thread::sleep(every);
    }
    let _ = writeln!(out, "done");
    let _ = out.flush();
}
