//! `worker-mixed-group [--drop NAME] [--exit]`: leads a process group of two hanging
//! children. The first inherits the environment; the second runs this program again
//! without the variable NAME (default `TOM_LEDGER_OPERATION`), so it cannot prove that it
//! belongs to the operation. Prints `pid P` for the one carrying NAME, then `pid Q` for
//! the other, then `ready` once the second runs without NAME. With `--exit` the leader
//! exits after `ready`, leaving both children in its group.
mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

fn main() {
    common::arm_safety_exit();
    let args = common::args();
    if common::flag(&args, "--bare") {
        common::hang();
    }
    let name: String =
        common::value(&args, "--drop").unwrap_or_else(|| "TOM_LEDGER_OPERATION".to_string());
    let carrying = common::fork(|| common::hang());
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("cannot find own executable: {e}");
        std::process::exit(70)
    });
    let bare = common::fork(|| {
        let err = std::process::Command::new(&exe)
            .args(std::env::args().skip(1))
            .arg("--bare")
            .env_remove(&name)
            .exec();
        eprintln!("cannot re-execute {}: {err}", exe.display());
    });
    // Ready only once the second child's environment no longer holds NAME.
    let entry = format!("{name}=");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let env = std::fs::read(format!("/proc/{bare}/environ")).unwrap_or_default();
        let carries = env
            .split(|b| *b == 0)
            .any(|e| e.starts_with(entry.as_bytes()));
        let cmdline = std::fs::read(format!("/proc/{bare}/cmdline")).unwrap_or_default();
        let execed = cmdline.split(|b| *b == 0).any(|a| a == b"--bare");
        if execed && !carries {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("the second child never ran without {name}");
            std::process::exit(70);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    common::say(&format!("pid {carrying}"));
    common::say(&format!("pid {bare}"));
    common::say("ready");
    if common::flag(&args, "--exit") {
        std::process::exit(0);
    }
    common::hang();
}
