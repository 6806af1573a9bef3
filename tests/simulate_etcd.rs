//! The 15 scenarios on the etcd backend, against a real etcd member of the test's own
//! (each scenario under a key prefix of its own, so they run at once on one member), and
//! with the runner starting its own member in the scenario's scratch directory.

#![cfg(feature = "etcd")]

mod etcd_common;
mod simulate_common;

use etcd_common::Etcd;
use simulate_common::{assert_all_pass_on, outcome_of};
use tom_dist_ledger::simulate::protocol::Event;
use tom_dist_ledger::simulate::{Backend, Outcome, Timing};
use tom_dist_ledger::{Connect, Ledger, OperationId};

/// The archived operation of `outcome`, read from `etcd` under the scenario's prefix:
/// the participants wrote there, not somewhere else.
fn archived_in_etcd(etcd: &Etcd, outcome: &Outcome) -> tom_dist_ledger::OperationState {
    let label = &outcome.observed.ledger;
    let prefix = label.rsplit(' ').next().expect("a prefix in the label");
    assert!(label.starts_with(&format!("etcd {} ", etcd.endpoint_list())));
    let op = outcome
        .observed
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Ready { operation, .. } => Some(operation.clone()),
            _ => None,
        })
        .expect("an operation");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let target = Connect::etcd_from_list(&etcd.endpoint_list(), Some(prefix)).expect("etcd");
        let ledger = Ledger::connect(target).await.expect("connect");
        let op = OperationId::parse(op.as_str()).expect("operation id");
        let data = ledger.store().read_archived(&op).await.expect("archived");
        ledger.dispose().await;
        data.operation_state
    })
}

#[test]
fn completing_scenarios_pass_on_etcd() {
    let etcd = Etcd::single();
    let outcomes = assert_all_pass_on(
        Backend::Etcd,
        Some(etcd.endpoints()),
        &[
            "happy_path",
            "direct_call_no_supervisor",
            "parallel_calls_from_bridge",
            "deeply_nested_chain",
        ],
    );
    let parallel = outcome_of(&outcomes, "parallel_calls_from_bridge");
    assert!(
        parallel
            .observed
            .open_together
            .iter()
            .any(|open| open.contains("vscode-call-1") && open.contains("vscode-call-2"))
    );
    for o in &outcomes {
        assert_eq!(
            archived_in_etcd(&etcd, o),
            tom_dist_ledger::OperationState::Completed
        );
    }
}

#[test]
fn crashes_pass_on_etcd() {
    let etcd = Etcd::single();
    let outcomes = assert_all_pass_on(
        Backend::Etcd,
        Some(etcd.endpoints()),
        &[
            "cli_crash_during_init",
            "cli_crash_during_bridge",
            "cli_crash_during_copilot",
            "bridge_crash_during_init",
            "bridge_crash_during_copilot",
            "crash_during_cleanup",
        ],
    );
    let crash = outcome_of(&outcomes, "cli_crash_during_bridge");
    assert_eq!(
        archived_in_etcd(&etcd, crash),
        tom_dist_ledger::OperationState::Failed
    );
}

#[test]
fn hang_timeout_error_and_aborts_pass_on_etcd() {
    let etcd = Etcd::single();
    let outcomes = assert_all_pass_on(
        Backend::Etcd,
        Some(etcd.endpoints()),
        &[
            "bridge_hang",
            "copilot_timeout",
            "copilot_error",
            "user_abort_during_bridge",
            "user_abort_during_copilot",
        ],
    );
    // A hang is seen when etcd lets the stopped participant's lease expire: its TTL is
    // the stale threshold, renewed every third of it, so not before two thirds of the
    // threshold after the stop.
    let timing = Timing::fast();
    let least = (timing.stale * 2 / 3).as_secs_f64() * 1000.0;
    let hang = outcome_of(&outcomes, "bridge_hang");
    let detection = hang.observed.detection_ms().expect("a detection");
    assert!(detection >= least, "hang detected after {detection} ms");
}

#[test]
fn the_runner_starts_and_removes_an_etcd_member_of_its_own() {
    // No cluster named: each scenario's member lives in its scratch directory, which
    // the group's checks find empty, with no etcd process left.
    let outcomes = assert_all_pass_on(
        Backend::Etcd,
        None,
        &["happy_path", "bridge_crash_during_init"],
    );
    for o in &outcomes {
        assert!(
            o.observed.ledger.starts_with("etcd http://127.0.0.1:"),
            "{}",
            o.observed.ledger
        );
    }
}
