//! Crashes (SIGKILL) and a hang (SIGSTOP) of the cli and the bridge, at init, during
//! the bridge's call, during copilot's, and during cleanup.

mod simulate_common;

use simulate_common::assert_passes;
use tom_dist_ledger::simulate::Timing;
use tom_dist_ledger::simulate::observed::Ended;
use tom_dist_ledger::simulate::scenario::ExitExpect;

#[test]
fn cli_crash_during_init_leaves_the_operation_for_recovery() {
    assert_passes("cli_crash_during_init");
}

#[test]
fn cli_crash_during_bridge_is_cleaned_up_by_the_bridge() {
    assert_passes("cli_crash_during_bridge");
}

#[test]
fn cli_crash_during_copilot_unwinds_everyone() {
    assert_passes("cli_crash_during_copilot");
}

#[test]
fn bridge_crash_during_init_is_seen_by_its_caller() {
    assert_passes("bridge_crash_during_init");
}

#[test]
fn bridge_crash_during_copilot_fails_the_operation() {
    assert_passes("bridge_crash_during_copilot");
}

#[test]
fn bridge_hang_is_judged_stale_and_the_continued_bridge_exits() {
    let outcome = assert_passes("bridge_hang");
    // Judged by heartbeat age (its last beat up to one interval before the stop), not at
    // once: the stopped process was alive.
    let timing = Timing::fast();
    let least = (timing.stale - timing.heartbeat * 2).as_secs_f64() * 1000.0;
    let detection = outcome.observed.detection_ms().expect("a detection");
    assert!(detection >= least, "detected after {detection} ms");
    assert_eq!(
        outcome.observed.ended.get("bridge"),
        Some(&Ended::Exit(ExitExpect::Code(1)))
    );
}

#[test]
fn crash_during_cleanup_is_finished_by_the_cli() {
    assert_passes("crash_during_cleanup");
}
