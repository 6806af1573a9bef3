//! `worker-fork-tree N [--ignore-term] [--exit]`: forks N children that hang, prints
//! `pid P` for each and then `ready` once all exist. With `--ignore-term` every process
//! ignores SIGTERM. With `--exit` the worker itself exits after `ready`, leaving the
//! children behind in its process group.
mod common;

fn main() {
    common::arm_safety_exit();
    let args = common::args();
    let n: usize = common::positional(&args, &[])
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    if common::flag(&args, "--ignore-term") {
        common::ignore_term();
    }
    for _ in 0..n {
        let pid = common::fork(|| common::hang());
        common::say(&format!("pid {pid}"));
    }
    common::say("ready");
    if common::flag(&args, "--exit") {
        std::process::exit(0);
    }
    common::hang();
}
