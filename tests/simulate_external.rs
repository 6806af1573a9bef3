//! The external participant (copilot) never answers, or answers with an error.

mod simulate_common;

use simulate_common::assert_passes;
use tom_dist_ledger::simulate::Timing;
use tom_dist_ledger::simulate::protocol::Event;

#[test]
fn copilot_timeout_passes_the_real_deadline() {
    let outcome = assert_passes("copilot_timeout");
    let seen = &outcome.observed;
    let asked = seen
        .first(
            "vscode",
            |e| matches!(e, Event::Started { call, .. } if call == "vscode-copilot"),
        )
        .expect("vscode asked");
    let gave_up = seen
        .first("vscode", |e| matches!(e, Event::TimedOut { .. }))
        .expect("vscode timed out");
    let waited = (gave_up - asked) as f64 / 1e6;
    let deadline = Timing::fast().response_deadline.as_secs_f64() * 1000.0;
    assert!(
        waited >= deadline,
        "the deadline is {deadline} ms, vscode gave up after {waited} ms"
    );
}

#[test]
fn copilot_error_fails_the_operation_with_its_message() {
    assert_passes("copilot_error");
}
