//! The simulator: the original's 15 scenarios, and custom ones from TOML, as real
//! processes. Each participant (the original's CLI, Bridge, VS Code extension and
//! Copilot roles) is its own OS process joined to one operation through this library; a
//! crash is a SIGKILL, a hang a SIGSTOP, a user's abort a SIGINT to the initiator, a
//! timeout a real deadline, and temp resources are real files. Each scenario states its
//! outcome and the run is checked against it.
//!
//! - [`scenario`]: what a scenario is (calls, nesting, faults at named points, expectation).
//! - [`builtin`]: the 15 built-in scenarios.
//! - [`load`]: custom scenarios from a TOML file (errors name `file:line:column`).
//! - [`participant`]: one participant process (`tom-ledger simulate-participant`).
//! - [`protocol`]: the commands and events between the runner and participants.
//! - [`processes`]: starting, commanding and signalling participant processes.
//! - [`runner`]: one scenario, start to end (`walk`: the call tree; `faults`: injecting
//!   them); [`observed`]: what it saw.
//! - [`check`]: expected versus seen; [`report`]: the table and the JSON.
//! - [`backend`]: where the operation lives (a scratch ledger directory, a `tom-ledger
//!   serve` or an etcd member started for the run, or a cluster named); [`timing`]: fast
//!   by default, or paced.

pub mod backend;
pub mod builtin;
pub mod check;
mod faults;
pub mod load;
pub mod observed;
pub mod participant;
pub mod processes;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod timing;
mod walk;

pub use backend::Backend;
pub use report::Outcome;
pub use runner::RunnerOptions;
pub use scenario::Scenario;
pub use timing::Timing;

use crate::error::{Error, Result};

/// Run one scenario and check it.
pub async fn run(scenario: &Scenario, options: &RunnerOptions) -> Result<Outcome> {
    let observed = runner::run_scenario(scenario, options).await?;
    let mismatches = check::check(scenario, &observed);
    Ok(Outcome {
        name: scenario.name.clone(),
        observed,
        mismatches,
    })
}

/// Pick scenarios by name from `available` (all of them when `names` is empty).
pub fn select(available: Vec<Scenario>, names: &[String]) -> Result<Vec<Scenario>> {
    if names.is_empty() {
        return Ok(available);
    }
    let mut out = Vec::new();
    for name in names {
        match available.iter().find(|s| &s.name == name) {
            Some(s) => out.push(s.clone()),
            None => return Err(Error::UnknownScenario(name.clone())),
        }
    }
    Ok(out)
}
