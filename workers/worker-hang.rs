//! Prints "ready", then hangs until a signal ends it (or the safety alarm).
mod common;

fn main() {
    common::arm_safety_exit();
    let _ = common::args();
    common::say("ready");
    common::hang();
}
