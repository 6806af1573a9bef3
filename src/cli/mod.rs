//! The `tom-ledger` command: thin glue over the library.
//!
//! - [`args`]: the command line (clap).
//! - [`plan`]: the TOML plan of `run`, validated before anything starts.
//! - [`schedule`]: the DAG scheduler (`-j`, failure policy, retries).
//! - [`launcher`]: one worker attempt as one library call (`Operation::exec_worker`), its
//!   typed outcome in the command's words.
//! - [`run`]: `run`, plus abort, timeouts and the end of the operation.
//! - [`signals`]: the signals `run` and `exec` handle: stop, and job control (Ctrl+Z).
//! - [`nested`]: `exec` and `temp`, which join an enclosing operation.
//! - [`inspect`] and [`trace`]: the read-only commands and `abort`.
//! - [`recover`]: cleaning up operations left by dead participants.
//! - [`serve`]: the ledger over HTTP.
//! - [`simulate`]: the simulator's scenarios, and one participant of them.
//! - [`output`]: progress display, plain lines or JSON events.
//! - [`exit`]: exit statuses.
//! - [`error`]: the errors only the command has (plan, program, missing operation).

mod args;
mod bounds;
mod error;
mod exit;
mod inspect;
mod launcher;
mod nested;
mod output;
mod plan;
mod recover;
mod run;
mod schedule;
mod serve;
mod signals;
mod simulate;
mod trace;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use tom_dist_ledger::ledger::ENV_LEDGER_ETCD_PREFIX;
use tom_dist_ledger::{Connect, Error, Ledger, OperationId, ParticipantId};

use args::{Cli, Command};
use exit::{CliResult, Exit, Failure};

/// Default ledger directory, under the current directory (the original's default).
pub const DEFAULT_LEDGER_DIR: &str = "_ai/operation_ledger";

/// Run the command line; returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_tracing(cli.verbose);
    // The server answers many clients at once: it gets worker threads.
    let mut builder = match cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("cannot start the runtime: {e}"));
            return Exit::Failure.code();
        }
    };
    let result = runtime.block_on(dispatch(cli));
    let exit = match result {
        Ok(exit) => exit,
        Err(failure) => {
            print_error(&failure.message);
            failure.exit
        }
    };
    // Background tasks of the ledger (heartbeats, watches) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    exit.code()
}

/// Help and version go to stdout with status 0; anything else is one line and status 2.
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return 0;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return Exit::Usage.code();
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    print_error(line);
    Exit::Usage.code()
}

/// The one line of an error on stderr; a closed stderr is no reason to panic.
fn print_error(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "tom-ledger: error: {message}");
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOM_LEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::colour_on_stderr())
        .without_time()
        .try_init();
}

async fn dispatch(cli: Cli) -> CliResult {
    // The simulator makes its own scratch ledgers; its participants are told theirs.
    match cli.command {
        Command::Simulate(a) => return simulate::simulate(cli.json, cli.etcd, a).await,
        Command::SimulateParticipant(a) => {
            let at = simulate::LedgerArgs {
                ledger: cli.ledger,
                server: cli.server,
                token_file: cli.token_file,
                etcd: cli.etcd,
            };
            return simulate::participant(at, cli.participant, a).await;
        }
        _ => {}
    }
    let ctx = Context::new(&cli)?;
    match cli.command {
        Command::Run(a) => run::run(&ctx, a).await,
        Command::Exec(a) => nested::exec(&ctx, a).await,
        Command::Temp(a) => nested::temp(&ctx, a).await,
        Command::Ls => inspect::ls(&ctx).await,
        Command::Status(a) => inspect::status(&ctx, a).await,
        Command::Log(a) => inspect::log(&ctx, a).await,
        Command::Abort(a) => inspect::abort(&ctx, a).await,
        Command::Recover(a) => recover::recover(&ctx, a).await,
        Command::Trace(a) => inspect::trace(&ctx, a).await,
        Command::Serve(a) => serve::serve(&ctx, a).await,
        Command::Simulate(_) | Command::SimulateParticipant(_) => Ok(Exit::Success),
    }
}

/// What every command needs: where the ledger is and who we are.
pub struct Context {
    /// Absolute, so workers in other directories find it too.
    pub ledger_dir: PathBuf,
    /// An etcd ledger (`--etcd`, `TOM_LEDGER_ETCD`) instead of the directory: its
    /// endpoints and key prefix.
    etcd: Option<(String, String)>,
    pub participant: ParticipantId,
    pub json: bool,
    /// The file ledger's bounds (see [`bounds`]).
    pub store_options: tom_dist_ledger::store::FileStoreOptions,
    /// A ledger server instead of the directory (`--server`, `TOM_LEDGER_URL`).
    pub remote: Option<Remote>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
}

/// A ledger server: its URL (or `auto`) and the token to send.
pub struct Remote {
    pub url: String,
    pub token: Option<String>,
}

impl Remote {
    fn connect(&self) -> Connect {
        let target = if self.url == tom_dist_ledger::ledger::AUTO {
            Connect::discover()
        } else {
            Connect::remote(&self.url)
        };
        match &self.token {
            Some(token) => target.token(token),
            None => target,
        }
    }
}

/// The server named by `--server` or `TOM_LEDGER_URL` (unless `--ledger` names a
/// directory), with its token from `--token-file`, else `TOM_LEDGER_TOKEN`.
fn remote_of(cli: &Cli) -> CliResult<Option<Remote>> {
    use tom_dist_ledger::ledger::{ENV_LEDGER_TOKEN, ENV_LEDGER_URL};
    let url = match (&cli.server, &cli.ledger) {
        (Some(url), _) => url.clone(),
        (None, Some(_)) => return Ok(None),
        (None, None) => match std::env::var(ENV_LEDGER_URL) {
            Ok(url) if !url.is_empty() && std::env::var_os("TOM_LEDGER_DIR").is_none() => url,
            _ => return Ok(None),
        },
    };
    if url != tom_dist_ledger::ledger::AUTO {
        tom_dist_ledger::store::remote::parse_url(&url)?;
    }
    let token = match &cli.token_file {
        Some(file) => Some(tom_dist_ledger::server::auth::read_token(file)?),
        None => std::env::var(ENV_LEDGER_TOKEN)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    Ok(Some(Remote { url, token }))
}

impl Context {
    fn new(cli: &Cli) -> CliResult<Context> {
        // `--etcd`, else `--server`/`TOM_LEDGER_URL`, else `--ledger`, else the ledger a
        // parent `run` named for its workers.
        let remote = match &cli.etcd {
            Some(_) => None,
            None => remote_of(cli)?,
        };
        let from_env = match (&cli.ledger, &cli.etcd, &remote) {
            (None, None, None) => Connect::from_env()?,
            _ => None,
        };
        let etcd_of = |c: &Connect| {
            let endpoints = c.etcd_endpoints()?.join(",");
            Some((endpoints, c.etcd_prefix()?.to_string()))
        };
        let etcd = match (&cli.etcd, &from_env) {
            (Some(list), _) => etcd_of(&etcd_connect(list)?),
            (None, Some(c)) => etcd_of(c),
            (None, None) => None,
        };
        let dir = match (&cli.ledger, from_env.as_ref().and_then(Connect::local_dir)) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d.to_path_buf(),
            _ => PathBuf::from(DEFAULT_LEDGER_DIR),
        };
        let ledger_dir = std::path::absolute(&dir).map_err(|e| {
            Failure::usage(format!("invalid ledger directory `{}`: {e}", dir.display()))
        })?;
        if etcd.is_none() && remote.is_none() {
            check_ledger_dir(&ledger_dir)?;
        }
        let participant = match &cli.participant {
            Some(p) => ParticipantId::parse(p.as_str())?,
            None => ParticipantId::parse(format!("{}-{}", cli.command.name(), std::process::id()))?,
        };
        Ok(Context {
            ledger_dir,
            etcd,
            participant,
            json: cli.json,
            store_options: bounds::from_env()?,
            remote,
            token_file: cli.token_file.clone(),
        })
    }

    fn connect_options(&self, target: Connect) -> Connect {
        target
            .file_store_options(self.store_options.clone())
            .participant(self.participant.clone())
    }

    /// Where the ledger is, for people to read.
    pub fn ledger_label(&self) -> String {
        match (&self.etcd, &self.remote) {
            (Some((endpoints, prefix)), _) => format!("etcd:{endpoints} {prefix}"),
            (None, Some(remote)) => remote.url.clone(),
            (None, None) => self.ledger_dir.display().to_string(),
        }
    }

    /// The etcd ledger, if that is the one.
    fn etcd_target(&self) -> CliResult<Option<Connect>> {
        match &self.etcd {
            Some((endpoints, prefix)) => {
                Ok(Some(Connect::etcd_from_list(endpoints, Some(prefix))?))
            }
            None => Ok(None),
        }
    }

    /// Connect, creating the ledger directory if needed (`run`).
    async fn connect(&self, tweak: impl FnOnce(Connect) -> Connect) -> CliResult<Ledger> {
        let target = match (self.etcd_target()?, &self.remote) {
            (Some(etcd), _) => etcd,
            (None, Some(remote)) => remote.connect(),
            (None, None) => Connect::local(&self.ledger_dir),
        };
        Ok(Ledger::connect(tweak(self.connect_options(target))).await?)
    }

    /// Connect to a ledger that must already exist; creates nothing. `None` when there
    /// is no ledger directory.
    async fn open_existing(&self) -> CliResult<Option<Existing>> {
        let remote = match (self.etcd_target()?, &self.remote) {
            (Some(etcd), _) => Some(etcd),
            (None, Some(remote)) => Some(remote.connect()),
            (None, None) => None,
        };
        if let Some(target) = remote {
            let ledger = Ledger::connect(self.connect_options(target)).await?;
            return Ok(Some(Existing { ledger }));
        }
        if !self.ledger_dir.is_dir() {
            return Ok(None);
        }
        let target = Connect::existing(&self.ledger_dir);
        let ledger = Ledger::connect(self.connect_options(target)).await?;
        Ok(Some(Existing { ledger }))
    }

    /// Like [`open_existing`](Self::open_existing), for a command about one operation.
    async fn open_for(&self, op: &OperationId) -> CliResult<Existing> {
        self.open_existing()
            .await?
            .ok_or_else(|| Failure::from(Error::OperationNotFound(op.clone())))
    }
}

/// The ledger directory, or the nearest of its ancestors that exists, must be a
/// directory: a regular file there is bad input for every command, refused before
/// anything reads or writes.
fn check_ledger_dir(dir: &Path) -> CliResult<()> {
    let Some(existing) = dir.ancestors().find(|a| a.symlink_metadata().is_ok()) else {
        return Ok(());
    };
    if existing.is_dir() {
        return Ok(());
    }
    let what = format!("ledger directory `{}`", dir.display());
    let reason = if existing == dir {
        "is not a directory".to_string()
    } else {
        format!("`{}` above it is not a directory", existing.display())
    };
    Err(Error::invalid(what, reason).into())
}

/// The etcd ledger named by `--etcd`, under the key prefix a parent `run` named (its
/// workers get both variables) or the default one.
fn etcd_connect(list: &str) -> CliResult<Connect> {
    let prefix = std::env::var(ENV_LEDGER_ETCD_PREFIX)
        .ok()
        .filter(|p| !p.is_empty());
    Ok(Connect::etcd_from_list(list, prefix.as_deref())?)
}

/// A ledger opened without creating anything in it.
pub struct Existing {
    pub ledger: Ledger,
}

/// Parse an operation id given on the command line or in the environment.
pub fn operation_id(value: &str) -> CliResult<OperationId> {
    Ok(OperationId::parse(value)?)
}
