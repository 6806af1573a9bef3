//! Ignores SIGTERM, prints "ready" once the disposition is set, then hangs.
mod common;

fn main() {
    common::arm_safety_exit();
    let _ = common::args();
    common::ignore_term();
    common::say("ready");
    common::hang();
}
