//! The original's 15 scenarios (its `Scenarios.all`), by their original names, with the
//! faults made real and the outcome stated.
//!
//! Participants: `cli` (the initiator), `bridge`, `vscode` and `copilot` (the external
//! participant that answers `vscode`'s calls). Each is its own process. A crash is a
//! SIGKILL, a hang a SIGSTOP, a user's abort a SIGINT to `cli`, a timeout the real
//! deadline of an external call that is never answered.

use std::collections::BTreeMap;

use crate::model::OperationState;

use super::scenario::{CallSpec, ExitExpect, Expectation, Fault, FaultKind, Point, Scenario};

const SIGKILL: ExitExpect = ExitExpect::Signal(9);
const OK: ExitExpect = ExitExpect::Code(0);
const FAILED: ExitExpect = ExitExpect::Code(1);
const TIMEOUT: ExitExpect = ExitExpect::Code(124);
const ABORTED: ExitExpect = ExitExpect::Code(130);

/// Every built-in scenario, in the original's order.
pub fn all() -> Vec<Scenario> {
    vec![
        happy_path(),
        cli_crash_during_init(),
        cli_crash_during_bridge(),
        cli_crash_during_copilot(),
        bridge_crash_during_init(),
        bridge_crash_during_copilot(),
        bridge_hang(),
        copilot_timeout(),
        copilot_error(),
        user_abort_during_bridge(),
        user_abort_during_copilot(),
        direct_call_no_supervisor(),
        parallel_calls_from_bridge(),
        deeply_nested_chain(),
        crash_during_cleanup(),
    ]
}

/// The built-in scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

fn cli() -> CallSpec {
    CallSpec::new("cli-main", "cli").temp("cli.tmp")
}

fn bridge() -> CallSpec {
    CallSpec::new("bridge-process", "bridge").temp("bridge.tmp")
}

fn copilot_call() -> CallSpec {
    CallSpec::new("vscode-copilot", "vscode")
        .temp("vscode.tmp")
        .external("copilot", "copilot-chat")
}

/// cli-main → bridge-process
fn cli_bridge() -> Vec<CallSpec> {
    vec![cli().nested(bridge())]
}

/// cli-main → bridge-process → vscode-copilot ⇢ copilot-chat
fn full_chain() -> Vec<CallSpec> {
    vec![cli().nested(bridge().nested(copilot_call()))]
}

fn fault(participant: &str, kind: FaultKind, at: &str) -> Fault {
    Fault {
        participant: participant.into(),
        kind,
        at: Point::parse(at).unwrap_or(Point::Joined(participant.into())),
    }
}

fn list(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn exits(pairs: &[(&str, ExitExpect)]) -> BTreeMap<String, ExitExpect> {
    pairs.iter().map(|(p, e)| (p.to_string(), *e)).collect()
}

fn scenario(
    name: &str,
    description: &str,
    calls: Vec<CallSpec>,
    faults: Vec<Fault>,
    expect: Expectation,
) -> Scenario {
    Scenario {
        name: name.into(),
        description: description.into(),
        calls,
        faults,
        expect,
    }
}

fn completed(participants: &[&str], temps: &[&str]) -> Expectation {
    Expectation {
        state: OperationState::Completed,
        temps_kept: list(temps),
        exits: participants.iter().map(|p| (p.to_string(), OK)).collect(),
        ..Expectation::default()
    }
}

pub fn happy_path() -> Scenario {
    scenario(
        "happy_path",
        "the full chain completes; every temp file is kept (only a failure deletes them)",
        full_chain(),
        vec![],
        completed(
            &["cli", "bridge", "vscode", "copilot"],
            &["cli.tmp", "bridge.tmp", "vscode.tmp"],
        ),
    )
}

pub fn cli_crash_during_init() -> Scenario {
    scenario(
        "cli_crash_during_init",
        "the initiator is killed right after creating the operation: nobody is left to clean up, the operation is left for recovery",
        cli_bridge(),
        vec![fault("cli", FaultKind::Crash, "joined:cli")],
        Expectation {
            state: OperationState::Running,
            exits: exits(&[("cli", SIGKILL)]),
            ..Expectation::default()
        },
    )
}

pub fn cli_crash_during_bridge() -> Scenario {
    scenario(
        "cli_crash_during_bridge",
        "the initiator is killed while the bridge works: the bridge sees it die, coordinates the cleanup, deletes both temp files",
        cli_bridge(),
        vec![fault("cli", FaultKind::Crash, "started:bridge-process")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["bridge"]),
            order: list(&["fault", "failed:bridge"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp"]),
            reason_contains: Some("cli".into()),
            exits: exits(&[("cli", SIGKILL), ("bridge", FAILED)]),
            ..Expectation::default()
        },
    )
}

pub fn cli_crash_during_copilot() -> Scenario {
    scenario(
        "cli_crash_during_copilot",
        "the initiator is killed while copilot works: everyone below sees the failure and unwinds, every temp file goes",
        full_chain(),
        vec![fault("cli", FaultKind::Crash, "started:copilot-chat")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["bridge", "vscode", "copilot"]),
            order: list(&["fault", "failed:bridge"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp", "vscode.tmp"]),
            reason_contains: Some("cli".into()),
            exits: exits(&[
                ("cli", SIGKILL),
                ("bridge", FAILED),
                ("vscode", FAILED),
                ("copilot", FAILED),
            ]),
            ..Expectation::default()
        },
    )
}

pub fn bridge_crash_during_init() -> Scenario {
    scenario(
        "bridge_crash_during_init",
        "the bridge is killed right after joining, before its call: the cli sees its callee die and fails its call",
        cli_bridge(),
        vec![fault("bridge", FaultKind::Crash, "joined:bridge")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["cli"]),
            order: list(&["fault", "detected:cli", "failed:cli"]),
            temps_gone: list(&["cli.tmp"]),
            reason_contains: Some("participant `bridge` crashed".into()),
            exits: exits(&[("cli", FAILED), ("bridge", SIGKILL)]),
            ..Expectation::default()
        },
    )
}

pub fn bridge_crash_during_copilot() -> Scenario {
    scenario(
        "bridge_crash_during_copilot",
        "the bridge is killed while copilot works: its call fails the operation, vscode stops waiting, copilot is cancelled, the cli cleans up",
        full_chain(),
        vec![fault("bridge", FaultKind::Crash, "started:copilot-chat")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["cli", "vscode", "copilot"]),
            order: list(&["fault", "failed:cli"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp", "vscode.tmp"]),
            reason_contains: Some("bridge".into()),
            exits: exits(&[
                ("cli", FAILED),
                ("bridge", SIGKILL),
                ("vscode", FAILED),
                ("copilot", FAILED),
            ]),
            ..Expectation::default()
        },
    )
}

pub fn bridge_hang() -> Scenario {
    scenario(
        "bridge_hang",
        "the bridge is stopped (SIGSTOP) in its call: past the stale threshold the cli declares it crashed and cleans up; continued, the bridge finds itself fenced out and exits",
        cli_bridge(),
        vec![fault("bridge", FaultKind::Hang, "started:bridge-process")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["cli"]),
            order: list(&["fault", "failed:cli"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp"]),
            reason_contains: Some("bridge".into()),
            exits: exits(&[("cli", FAILED), ("bridge", FAILED)]),
            ..Expectation::default()
        },
    )
}

pub fn copilot_timeout() -> Scenario {
    scenario(
        "copilot_timeout",
        "copilot never answers: vscode's deadline passes, its call fails with the timeout, the operation fails",
        full_chain(),
        vec![fault("copilot", FaultKind::Timeout, "started:copilot-chat")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["cli", "bridge", "vscode", "copilot"]),
            order: list(&["fault", "failed:cli"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp", "vscode.tmp"]),
            reason_contains: Some("timed out".into()),
            exits: exits(&[
                ("cli", FAILED),
                ("bridge", FAILED),
                ("vscode", TIMEOUT),
                ("copilot", FAILED),
            ]),
            ..Expectation::default()
        },
    )
}

pub fn copilot_error() -> Scenario {
    scenario(
        "copilot_error",
        "copilot answers with an error: vscode fails its call with it, the operation fails",
        full_chain(),
        vec![fault(
            "copilot",
            FaultKind::Error("Copilot API error: rate limited".into()),
            "started:copilot-chat",
        )],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["cli", "bridge", "vscode", "copilot"]),
            order: list(&["fault", "failed:cli"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp", "vscode.tmp"]),
            reason_contains: Some("rate limited".into()),
            exits: exits(&[
                ("cli", FAILED),
                ("bridge", FAILED),
                ("vscode", FAILED),
                ("copilot", FAILED),
            ]),
            ..Expectation::default()
        },
    )
}

pub fn user_abort_during_bridge() -> Scenario {
    scenario(
        "user_abort_during_bridge",
        "Ctrl+C (SIGINT) to the cli while the bridge works: the abort reaches the bridge, both temp files go, both exit 130",
        cli_bridge(),
        vec![fault("cli", FaultKind::Abort, "started:bridge-process")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["bridge"]),
            saw_aborted: list(&["bridge"]),
            order: list(&["fault", "aborted:bridge"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp"]),
            reason_contains: Some("SIGINT".into()),
            exits: exits(&[("cli", ABORTED), ("bridge", ABORTED)]),
            ..Expectation::default()
        },
    )
}

pub fn user_abort_during_copilot() -> Scenario {
    scenario(
        "user_abort_during_copilot",
        "Ctrl+C (SIGINT) to the cli while copilot works: the abort propagates down, copilot is cancelled, all exit 130",
        full_chain(),
        vec![fault("cli", FaultKind::Abort, "started:copilot-chat")],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["bridge", "vscode", "copilot"]),
            saw_aborted: list(&["bridge", "vscode", "copilot"]),
            order: list(&["fault", "aborted:copilot"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp", "vscode.tmp"]),
            reason_contains: Some("SIGINT".into()),
            exits: exits(&[
                ("cli", ABORTED),
                ("bridge", ABORTED),
                ("vscode", ABORTED),
                ("copilot", ABORTED),
            ]),
            ..Expectation::default()
        },
    )
}

pub fn direct_call_no_supervisor() -> Scenario {
    scenario(
        "direct_call_no_supervisor",
        "the cli calls vscode directly (no bridge), vscode asks copilot: completes",
        vec![
            cli().nested(
                CallSpec::new("vscode-direct", "vscode")
                    .temp("vscode.tmp")
                    .external("copilot", "copilot-chat"),
            ),
        ],
        vec![],
        completed(&["cli", "vscode", "copilot"], &["cli.tmp", "vscode.tmp"]),
    )
}

pub fn parallel_calls_from_bridge() -> Scenario {
    let mut expect = completed(&["cli", "bridge", "vscode"], &["cli.tmp", "bridge.tmp"]);
    expect.concurrent = list(&["vscode-call-1", "vscode-call-2"]);
    scenario(
        "parallel_calls_from_bridge",
        "the bridge has two vscode calls open at the same time (checked in the ledger): completes",
        vec![
            cli().nested(
                bridge()
                    .parallel()
                    .nested(CallSpec::new("vscode-call-1", "vscode"))
                    .nested(CallSpec::new("vscode-call-2", "vscode")),
            ),
        ],
        vec![],
        expect,
    )
}

pub fn deeply_nested_chain() -> Scenario {
    let mut expect = completed(&["cli", "bridge", "vscode", "copilot"], &[]);
    expect.concurrent = list(&["level-1", "level-2", "level-3", "level-4", "level-5"]);
    scenario(
        "deeply_nested_chain",
        "five levels alternating between processes (cli → bridge → vscode → bridge → vscode ⇢ copilot), all open at once: completes",
        vec![CallSpec::new("level-1", "cli").nested(
            CallSpec::new("level-2", "bridge").nested(
                CallSpec::new("level-3", "vscode").nested(
                    CallSpec::new("level-4", "bridge").nested(
                        CallSpec::new("level-5", "vscode").external("copilot", "copilot-chat"),
                    ),
                ),
            ),
        )],
        vec![],
        expect,
    )
}

pub fn crash_during_cleanup() -> Scenario {
    scenario(
        "crash_during_cleanup",
        "the bridge's call fails and the bridge is killed while it cleans up: the cli sees it die, fails the operation and removes what the bridge left",
        cli_bridge(),
        vec![
            fault(
                "bridge",
                FaultKind::Error("bridge lost its workspace".into()),
                "started:bridge-process",
            ),
            fault("bridge", FaultKind::Crash, "cleanup:bridge-process"),
        ],
        Expectation {
            state: OperationState::Failed,
            saw_failed: list(&["cli"]),
            order: list(&["fault", "detected:cli", "failed:cli"]),
            temps_gone: list(&["cli.tmp", "bridge.tmp"]),
            reason_contains: Some("participant `bridge` crashed".into()),
            exits: exits(&[("cli", FAILED), ("bridge", SIGKILL)]),
            ..Expectation::default()
        },
    )
}
