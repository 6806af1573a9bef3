//! Stderr lines arrive whole even though the worker writes them in odd-sized chunks that
//! cut lines (and multi-byte characters) in the middle.

mod common;

use std::sync::{Arc, Mutex};

use common::process::TestScope;
use tom_dist_ledger::process::{LineDecoder, RunOptions, WorkerCommand, run_stdio};

const LINES: &str = env!("CARGO_BIN_EXE_worker-stderr-lines");

fn expected(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("line {i}: grüße {}", ".".repeat(i % 50)))
        .collect()
}

#[tokio::test]
async fn stderr_lines_survive_chunk_boundaries() {
    let scope = TestScope::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let opts = RunOptions::default().on_stderr(move |l| g.lock().expect("lock").push(l.to_owned()));
    let out = run_stdio(
        WorkerCommand::new(LINES).args(["2000", "--marker", &scope.marker]),
        opts,
    )
    .await
    .expect("run");
    assert_eq!(out.data, b"{\"lines\":2000}\n");
    let got = got.lock().expect("lock");
    assert_eq!(got.len(), 2000);
    assert_eq!(*got, expected(2000));
}

#[test]
fn decoder_gives_the_same_lines_for_any_chunking() {
    let text: String = expected(300).iter().map(|l| format!("{l}\r\n")).collect();
    let bytes = text.as_bytes();
    for step in [1usize, 2, 3, 7, 64, 4093] {
        let mut decoder = LineDecoder::default();
        let mut lines = Vec::new();
        for chunk in bytes.chunks(step) {
            decoder.push(chunk, &mut |l| lines.push(l));
        }
        decoder.finish(&mut |l| lines.push(l));
        assert_eq!(lines, expected(300), "chunk size {step}");
    }
}
