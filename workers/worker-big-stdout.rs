//! `worker-big-stdout N`: writes N bytes (`x`) to stdout.
mod common;

use std::io::Write;

fn main() {
    common::arm_safety_exit();
    let args = common::args();
    let n: usize = common::positional(&args, &[])
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024);
    let chunk = vec![b'x'; 64 * 1024];
    let mut out = std::io::stdout().lock();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        if out.write_all(&chunk[..k]).is_err() {
            std::process::exit(1);
        }
        left -= k;
    }
    let _ = out.flush();
}
