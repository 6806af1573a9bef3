//! `worker-write-result PATH [--content TEXT] [--slow] [--exit N] [--no-file]
//!  [--stderr TEXT] [--stdout TEXT]`
//!
//! Writes TEXT (default `{"ok":true}`) to PATH atomically: to `PATH.tmp`, then a rename.
//! `--slow` writes straight to PATH in pieces with pauses, so a reader that does not wait
//! for the exit sees a partial file. `--exit N` exits with N (after writing unless
//! `--no-file`).
mod common;

use std::io::Write;
use std::time::Duration;

fn main() {
    common::arm_safety_exit();
    let args = common::args();
    let opts = ["--content", "--exit", "--stderr", "--stdout"];
    let Some(path) = common::positional(&args, &opts) else {
        eprintln!("usage: worker-write-result PATH [options]");
        std::process::exit(2);
    };
    let content: String =
        common::value(&args, "--content").unwrap_or_else(|| "{\"ok\":true}".into());
    if let Some(line) = common::value::<String>(&args, "--stdout") {
        common::say(&line);
    }
    if let Some(line) = common::value::<String>(&args, "--stderr") {
        eprintln!("{line}");
    }
    if !common::flag(&args, "--no-file") {
        let written = if common::flag(&args, "--slow") {
            write_slowly(&path, content.as_bytes())
        } else {
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, &content).and_then(|()| std::fs::rename(&tmp, &path))
        };
        if let Err(e) = written {
            eprintln!("cannot write `{path}`: {e}");
            std::process::exit(74);
        }
    }
    std::process::exit(common::value(&args, "--exit").unwrap_or(0));
}

fn write_slowly(path: &str, content: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    for piece in content.chunks(content.len().div_ceil(5).max(1)) {
        f.write_all(piece)?;
        f.flush()?;
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(())
}
