//! `simulate` and its participants: thin over `tom_dist_ledger::simulate`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tom_dist_ledger::simulate::participant::{ParticipantConfig, run_participant};
use tom_dist_ledger::simulate::{self, Backend, RunnerOptions, Timing, backend, builtin, load};
use tom_dist_ledger::{CleanupHandler, Connect, OperationId, ParticipantId};

use super::args::{SimulateArgs, SimulateParticipantArgs};
use super::exit::{CliResult, Exit, Failure};

/// `tom-ledger simulate`: list, or run and check, scenarios.
pub async fn simulate(json: bool, args: SimulateArgs) -> CliResult {
    let backend = Backend::parse(&args.backend)?;
    let available = match &args.file {
        Some(file) => load::load_file(file)?,
        None => builtin::all(),
    };
    if args.list {
        return list(json, &available);
    }
    backend.check_available()?;
    if args.scenarios.is_empty() && !args.all && args.file.is_none() {
        return Err(Failure::usage(
            "name the scenarios to run, or use --all (--list names them)",
        ));
    }
    let selected = simulate::select(available, &args.scenarios)?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find this executable: {e}")))?;
    let mut options = RunnerOptions::new(exe);
    options.backend = backend;
    options.timing = Timing::paced(Duration::from_millis(args.pace));
    // Ctrl+C ends the run: the scenario under way is dropped (its participants are
    // killed, its scratch directory removed) and the command exits with 128+N.
    let mut signals = CleanupHandler::global().install_reporting()?;
    let mut outcomes = Vec::new();
    for scenario in &selected {
        let outcome = tokio::select! {
            outcome = simulate::run(scenario, &options) => outcome?,
            Some(sig) = signals.recv() => {
                return Err(Failure {
                    exit: Exit::Signal(sig as i32),
                    message: format!(
                        "interrupted by {sig} during scenario `{}` ({} of {} run)",
                        scenario.name,
                        outcomes.len(),
                        selected.len()
                    ),
                });
            }
        };
        if json {
            print_line(&simulate::report::json(&outcome).to_string());
        }
        outcomes.push(outcome);
    }
    if !json {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", simulate::report::table(&outcomes));
        let _ = out.flush();
    }
    Ok(if outcomes.iter().all(|o| o.passed()) {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn list(json: bool, scenarios: &[simulate::Scenario]) -> CliResult {
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in scenarios {
        if json {
            let faults: Vec<String> = s
                .faults
                .iter()
                .map(|f| format!("{} {} at {}", f.kind.name(), f.participant, f.at))
                .collect();
            let line = serde_json::json!({
                "scenario": s.name,
                "description": s.description,
                "faults": faults,
                "expected_state": s.expect.state.to_string(),
            });
            print_line(&line.to_string());
        } else {
            print_line(&format!("{:<width$}  {}", s.name, s.description));
        }
    }
    Ok(Exit::Success)
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `tom-ledger simulate-participant`: one participant process. The initiator takes
/// Ctrl+C as `run` does: the signal handler cleans up and exits with 128+N.
pub async fn participant(
    ledger: Option<PathBuf>,
    participant: Option<String>,
    args: SimulateParticipantArgs,
) -> CliResult {
    let (Some(dir), Some(name)) = (ledger, participant) else {
        return Err(Failure::usage(
            "simulate-participant needs --ledger DIR and --participant ID",
        ));
    };
    let id = ParticipantId::parse(name.as_str())?;
    let join = match &args.operation {
        Some(op) => Some(OperationId::parse(op.as_str())?),
        None => None,
    };
    if join.is_none() {
        CleanupHandler::global().install()?;
    }
    let timing = Timing {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        stale: Duration::from_millis(args.stale_ms),
        cleanup_wait: Duration::from_millis(args.cleanup_wait_ms),
        ..Timing::fast()
    };
    let connect = backend::participant_connect(Connect::local(dir), id, &timing);
    let code = run_participant(ParticipantConfig { connect, join }).await;
    // A signal cleanup under way ends the process itself (128+N).
    CleanupHandler::global().settle().await;
    Ok(Exit::Code(code))
}
