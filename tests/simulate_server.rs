//! The 15 scenarios on the server backend: each scenario starts its own `tom-ledger
//! serve` (free loopback port, a scratch ledger directory, a token), its participants
//! connect with `--server` and the token file, and the runner reads the outcome through
//! the server. Scenarios of a group run at once; every server is gone afterwards.

mod simulate_common;

use simulate_common::{assert_all_pass_on, outcome_of};
use tom_dist_ledger::simulate::protocol::Event;
use tom_dist_ledger::simulate::{Backend, Timing};

#[test]
fn completing_scenarios_pass_on_the_server() {
    let outcomes = assert_all_pass_on(
        Backend::Server,
        None,
        &[
            "happy_path",
            "direct_call_no_supervisor",
            "parallel_calls_from_bridge",
            "deeply_nested_chain",
        ],
    );
    // Read through the server while both calls were open.
    let parallel = outcome_of(&outcomes, "parallel_calls_from_bridge");
    assert!(
        parallel
            .observed
            .open_together
            .iter()
            .any(|open| open.contains("vscode-call-1") && open.contains("vscode-call-2"))
    );
    for o in &outcomes {
        assert!(
            o.observed.ledger.starts_with("server http://127.0.0.1:"),
            "{}",
            o.observed.ledger
        );
    }
}

#[test]
fn crashes_pass_on_the_server() {
    assert_all_pass_on(
        Backend::Server,
        None,
        &[
            "cli_crash_during_init",
            "cli_crash_during_bridge",
            "cli_crash_during_copilot",
            "bridge_crash_during_init",
            "bridge_crash_during_copilot",
            "crash_during_cleanup",
        ],
    );
}

#[test]
fn hang_timeout_error_and_aborts_pass_on_the_server() {
    let outcomes = assert_all_pass_on(
        Backend::Server,
        None,
        &[
            "bridge_hang",
            "copilot_timeout",
            "copilot_error",
            "user_abort_during_bridge",
            "user_abort_during_copilot",
        ],
    );
    // A hang is judged by the age of the last beat by the server's clock: not before
    // the stale threshold less the beat interval(s) it may have sent before the stop.
    let timing = Timing::fast();
    let least = (timing.stale - timing.heartbeat * 2).as_secs_f64() * 1000.0;
    let hang = outcome_of(&outcomes, "bridge_hang");
    let detection = hang.observed.detection_ms().expect("a detection");
    assert!(detection >= least, "hang detected after {detection} ms");
    let abort = outcome_of(&outcomes, "user_abort_during_bridge");
    assert!(
        abort
            .observed
            .first("cli", |e| matches!(e, Event::Interrupted { .. }))
            .is_some(),
        "the cli's handler ran"
    );
}
