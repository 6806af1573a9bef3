//! Takes an exclusive `flock` on the file named by its first argument (an operation's
//! lock file), prints "locked", and holds it until a signal ends it (or the safety
//! alarm). Tests stop it with SIGSTOP to play a participant frozen inside a write.
mod common;

use std::fs::OpenOptions;

fn main() {
    common::arm_safety_exit();
    let args = common::args();
    let Some(path) = common::positional(&args, &[]) else {
        eprintln!("usage: worker-lock-holder LOCK_FILE [--marker X]");
        std::process::exit(2);
    };
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("cannot open `{path}`: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = file.lock() {
        eprintln!("cannot lock `{path}`: {e}");
        std::process::exit(1);
    }
    common::say("locked");
    common::hang();
}
