//! The scenarios that complete: the full chain, a direct call, parallel calls, five
//! levels of nesting. Each participant is its own process.

mod simulate_common;

use simulate_common::assert_passes;

#[test]
fn happy_path_completes_and_keeps_the_temp_files() {
    let outcome = assert_passes("happy_path");
    assert_eq!(
        outcome.observed.started.len(),
        4,
        "cli, bridge, vscode, copilot"
    );
}

#[test]
fn direct_call_no_supervisor_completes() {
    assert_passes("direct_call_no_supervisor");
}

#[test]
fn parallel_calls_from_bridge_are_open_at_the_same_time() {
    let outcome = assert_passes("parallel_calls_from_bridge");
    assert!(
        outcome
            .observed
            .open_together
            .iter()
            .any(|open| open.contains("vscode-call-1") && open.contains("vscode-call-2"))
    );
}

#[test]
fn deeply_nested_chain_has_five_levels_open_at_once() {
    assert_passes("deeply_nested_chain");
}
