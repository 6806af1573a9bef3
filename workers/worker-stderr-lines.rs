//! `worker-stderr-lines N`: writes N numbered lines to stderr in odd-sized chunks, so that
//! lines straddle chunk (write) boundaries, then prints `{"lines":N}` to stdout.
//! Line i is `line i: grüße ` followed by i % 50 dots.
mod common;

use std::io::Write;

fn main() {
    let args = common::args();
    let n: usize = common::positional(&args, &[])
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let mut text = Vec::new();
    for i in 0..n {
        let _ = writeln!(text, "line {i}: grüße {}", ".".repeat(i % 50));
    }
    let sizes = [7usize, 13, 1, 4093, 2, 31, 509];
    let mut err = std::io::stderr().lock();
    let mut at = 0;
    let mut k = 0;
    while at < text.len() {
        let end = (at + sizes[k % sizes.len()]).min(text.len());
        // stderr is unbuffered: one write(2) per chunk.
        if err.write_all(&text[at..end]).is_err() {
            std::process::exit(1);
        }
        at = end;
        k += 1;
    }
    println!("{{\"lines\":{n}}}");
}
