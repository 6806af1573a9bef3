//! The checks bite: a real run checked against expectations that are wrong in one way
//! each gives that one expected-versus-seen line; a run whose processes outlive it is
//! reported and its processes killed.

mod simulate_common;

use std::time::Duration;

use simulate_common::{run, run_with};
use tom_dist_ledger::OperationState;
use tom_dist_ledger::simulate::check::check;
use tom_dist_ledger::simulate::observed::Ended;
use tom_dist_ledger::simulate::scenario::ExitExpect;
use tom_dist_ledger::simulate::{Timing, builtin};

#[test]
fn every_kind_of_wrong_expectation_is_reported_as_expected_versus_seen() {
    let scenario = builtin::find("cli_crash_during_bridge").expect("built-in");
    let outcome = run(&scenario);
    assert!(outcome.passed(), "{:?}", outcome.mismatches);
    let seen = &outcome.observed;
    let one = |change: &dyn Fn(&mut tom_dist_ledger::simulate::Scenario)| {
        let mut wrong = scenario.clone();
        change(&mut wrong);
        let mismatches = check(&wrong, seen);
        assert_eq!(mismatches.len(), 1, "{mismatches:?}");
        mismatches[0].clone()
    };
    assert_eq!(
        one(&|s| s.expect.state = OperationState::Completed),
        format!(
            "final state: expected completed, saw failed ({})",
            seen.reason.clone().unwrap_or_default()
        )
    );
    assert_eq!(
        one(&|s| s.expect.saw_failed = vec![]),
        "saw failed(): expected nobody, saw bridge"
    );
    assert_eq!(
        one(&|s| s.expect.saw_aborted = vec!["bridge".into()]),
        "saw aborted(): expected bridge, saw nobody"
    );
    assert_eq!(
        one(&|s| s.expect.temps_kept = vec!["bridge.tmp".into()]),
        "temp `bridge.tmp`: expected kept, saw it gone"
    );
    assert_eq!(
        one(&|s| {
            s.expect.exits.insert("bridge".into(), ExitExpect::Code(0));
        }),
        "exit of `bridge`: expected 0, saw 1"
    );
    assert_eq!(
        one(&|s| {
            s.expect.exits.insert("cli".into(), ExitExpect::Code(130));
        }),
        "exit of `cli`: expected 130, saw SIGKILL"
    );
    assert_eq!(
        one(&|s| s.expect.reason_contains = Some("disk full".into())),
        format!(
            "failure reason: expected it to contain `disk full`, saw `{}`",
            seen.reason.clone().unwrap_or_default()
        )
    );
    assert!(
        one(&|s| s.expect.order = vec!["archived".into(), "fault".into()])
            .starts_with("order: expected `archived` before `fault`, saw `fault` ")
    );
    assert!(
        one(&|s| s.expect.order = vec!["failed:bridge".into(), "fault".into()])
            .starts_with("order: expected `failed:bridge` before `fault`, saw `fault` ")
    );
    assert_eq!(
        one(&|s| s.expect.order = vec!["fault".into(), "aborted:bridge".into()]),
        "order: expected `aborted:bridge` to happen, it never did"
    );
}

#[test]
fn processes_still_running_at_the_end_are_killed_and_fail_the_scenario() {
    // No time at all to settle after the hang: the cli and the stopped bridge are both
    // still there when the run ends.
    let scenario = builtin::find("bridge_hang").expect("built-in");
    let timing = Timing {
        settle_bound: Duration::ZERO,
        ..Timing::fast()
    };
    let outcome = run_with(&scenario, timing);
    assert!(!outcome.passed());
    for who in ["cli", "bridge"] {
        assert_eq!(outcome.observed.ended.get(who), Some(&Ended::Leftover));
        let line =
            format!("process `{who}`: expected it gone, saw it still running at the end (killed)");
        assert!(
            outcome.mismatches.contains(&line),
            "{:?}",
            outcome.mismatches
        );
    }
    // run_with checked that their pids are gone.
}
