//! A user's Ctrl+C: a real SIGINT to the cli, whose signal handler cleans up and exits
//! with 130; the abort reaches every other participant.

mod simulate_common;

use simulate_common::assert_passes;
use tom_dist_ledger::simulate::protocol::Event;

#[test]
fn user_abort_during_bridge_reaches_the_bridge() {
    let outcome = assert_passes("user_abort_during_bridge");
    assert!(
        outcome
            .observed
            .first("cli", |e| matches!(e, Event::Interrupted { .. }))
            .is_some(),
        "the cli's handler ran"
    );
}

#[test]
fn user_abort_during_copilot_reaches_everyone() {
    assert_passes("user_abort_during_copilot");
}
