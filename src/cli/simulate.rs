//! `simulate` and its participants: thin over `tom_dist_ledger::simulate`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tom_dist_ledger::cleanup::StopSignals;
use tom_dist_ledger::ledger::ENV_LEDGER_ETCD;
use tom_dist_ledger::simulate::participant::{ParticipantConfig, run_participant};
use tom_dist_ledger::simulate::{self, Backend, RunnerOptions, Timing, backend, builtin, load};
use tom_dist_ledger::{CleanupHandler, Connect, OperationId, ParticipantId};

use super::args::{SimulateArgs, SimulateParticipantArgs};
use super::exit::{CliResult, Exit, Failure};

/// `tom-ledger simulate`: list, or run and check, scenarios. `etcd`: the `--etcd`
/// endpoint list (else `TOM_LEDGER_ETCD`) for `--backend etcd`.
pub async fn simulate(json: bool, etcd: Option<String>, args: SimulateArgs) -> CliResult {
    let backend = Backend::parse(&args.backend)?;
    if etcd.is_some() && backend != Backend::Etcd {
        return Err(Failure::usage(format!(
            "--etcd names the cluster of `--backend etcd`, not of `--backend {}`",
            backend.name()
        )));
    }
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
    // killed, its scratch directory removed, its server stopped) and the command exits
    // with 128+N.
    let mut signals = CleanupHandler::global().install_reporting()?;
    // The etcd backend without a named cluster: one member of the run's own for every
    // scenario (each under its own key prefix), stopped and removed when this returns.
    let mut own_etcd = None;
    if backend == Backend::Etcd {
        let named = match etcd {
            Some(list) => Some(list),
            None => std::env::var(ENV_LEDGER_ETCD)
                .ok()
                .filter(|l| !l.is_empty()),
        };
        let endpoints = match named {
            Some(list) => split_endpoints(&list)?,
            None => {
                let dir = own_etcd_dir()?;
                let started = tokio::select! {
                    started = backend::OwnEtcd::start(&dir) => started?,
                    Some(sig) = signals.recv() => {
                        return Err(Failure {
                            exit: Exit::Signal(sig as i32),
                            message: format!("interrupted by {sig} while etcd started"),
                        });
                    }
                };
                let endpoints = vec![started.client_url().to_string()];
                own_etcd = Some(started);
                endpoints
            }
        };
        options.etcd_endpoints = Some(endpoints);
    }
    let result = run_selected(json, &selected, &options, &mut signals).await;
    if let Some(mut member) = own_etcd {
        member.stop().await;
    }
    result
}

/// Run the scenarios one after the other; Ctrl+C ends the run.
async fn run_selected(
    json: bool,
    selected: &[simulate::Scenario],
    options: &RunnerOptions,
    signals: &mut StopSignals,
) -> CliResult {
    let mut outcomes = Vec::new();
    for scenario in selected {
        let outcome = tokio::select! {
            outcome = simulate::run(scenario, options) => outcome?,
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

/// Where a participant's ledger is: the global `--ledger`, `--server` (with
/// `--token-file`) or `--etcd` the runner passes.
pub struct LedgerArgs {
    pub ledger: Option<PathBuf>,
    pub server: Option<String>,
    pub token_file: Option<PathBuf>,
    pub etcd: Option<String>,
}

impl LedgerArgs {
    /// The one ledger named (`--etcd-prefix` goes with `--etcd` only).
    fn connect(self, etcd_prefix: Option<&str>) -> CliResult<Connect> {
        if etcd_prefix.is_some() && self.etcd.is_none() {
            return Err(Failure::usage("--etcd-prefix goes with --etcd"));
        }
        match (self.ledger, self.server, self.etcd) {
            (Some(dir), None, None) => Ok(Connect::local(dir)),
            (None, Some(url), None) => {
                tom_dist_ledger::store::remote::parse_url(&url)?;
                let Some(file) = self.token_file else {
                    return Err(Failure::usage(
                        "simulate-participant --server needs --token-file",
                    ));
                };
                let token = tom_dist_ledger::server::auth::read_token(&file)?;
                Ok(Connect::remote(url).token(token))
            }
            (None, None, Some(list)) => Ok(Connect::etcd_from_list(&list, etcd_prefix)?),
            _ => Err(Failure::usage(
                "simulate-participant needs one of --ledger DIR, --server URL, --etcd URLS",
            )),
        }
    }
}

/// The endpoints of `--etcd` / `TOM_LEDGER_ETCD`, checked as the etcd ledger checks them.
fn split_endpoints(list: &str) -> CliResult<Vec<String>> {
    let connect = Connect::etcd_from_list(list, None)?;
    Ok(connect
        .etcd_endpoints()
        .map(<[String]>::to_vec)
        .unwrap_or_default())
}

/// A fresh directory (0700) for the run's own etcd member, under `$TMPDIR`; the member
/// removes it when it stops.
fn own_etcd_dir() -> CliResult<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tom-ledger-sim-etcd-{}-{}",
        std::process::id(),
        tom_dist_ledger::simulate::protocol::now_nanos()
    ));
    Ok(dir)
}

/// `tom-ledger simulate-participant`: one participant process. The initiator takes
/// Ctrl+C as `run` does: the signal handler cleans up and exits with 128+N.
pub async fn participant(
    at: LedgerArgs,
    participant: Option<String>,
    args: SimulateParticipantArgs,
) -> CliResult {
    let Some(name) = participant else {
        return Err(Failure::usage(
            "simulate-participant needs --participant ID",
        ));
    };
    let target = at.connect(args.etcd_prefix.as_deref())?;
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
    let connect = backend::participant_connect(target, id, &timing);
    let code = run_participant(ParticipantConfig { connect, join }).await;
    // A signal cleanup under way ends the process itself (128+N).
    CleanupHandler::global().settle().await;
    Ok(Exit::Code(code))
}
