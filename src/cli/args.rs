//! The command line, as clap sees it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Launch, track and clean up worker processes under one supervised operation.
#[derive(Debug, Parser)]
#[command(name = "tom-ledger", version, about, max_term_width = 100)]
pub struct Cli {
    /// Ledger directory [default: $TOM_LEDGER_DIR, else _ai/operation_ledger]
    #[arg(long, global = true, value_name = "DIR")]
    pub ledger: Option<PathBuf>,

    /// Ledger server (`http://HOST:PORT`, or `auto` to discover it) [default:
    /// $TOM_LEDGER_URL]
    #[arg(long, global = true, value_name = "URL", conflicts_with = "ledger")]
    pub server: Option<String>,

    /// etcd ledger: endpoints of one cluster, comma-separated [default: $TOM_LEDGER_ETCD]
    #[arg(
        long,
        global = true,
        value_name = "URL[,URL...]",
        conflicts_with_all = ["ledger", "server"]
    )]
    pub etcd: Option<String>,
    /// File holding the ledger server's token [default: $TOM_LEDGER_TOKEN, else the
    /// token beside a discovered server's ledger]; for `serve`, the token to require
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Participant id of this process [default: {command}-{pid}]
    #[arg(long, global = true, value_name = "ID")]
    pub participant: Option<String>,

    /// Print one JSON object per line on stdout, and nothing else there
    #[arg(long, global = true)]
    pub json: bool,

    /// More diagnostics on stderr (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run workers (a plan, or one command) under one supervised operation
    Run(RunArgs),
    /// Run a command as a tracked call of an operation, in its own process group
    Exec(ExecArgs),
    /// Register or forget temp resources of an operation
    Temp(TempArgs),
    /// List the operations of the ledger, live and archived, one line each
    Ls,
    /// State, participants, call frames and temp resources of operations
    Status(StatusArgs),
    /// Print the operation log
    Log(LogArgs),
    /// Set the abort flag of an operation
    Abort(OpArg),
    /// Clean up operations whose participants are all dead: stop their workers, delete
    /// their temp resources, archive them as failed
    Recover(RecoverArgs),
    /// Write the timeline of an operation as Chrome trace-event JSON (Perfetto)
    Trace(TraceArgs),
    /// Serve the ledger over HTTP to participants on this and other machines
    Serve(ServeArgs),
    /// Run the simulator's scenarios, every participant a real process, and check them
    Simulate(SimulateArgs),
    /// One participant process of a simulated scenario (started by `simulate`)
    #[command(hide = true)]
    SimulateParticipant(SimulateParticipantArgs),
}

impl Command {
    /// The command's name, used in default participant ids (`run-4242`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Exec(_) => "exec",
            Command::Temp(_) => "temp",
            Command::Ls => "ls",
            Command::Status(_) => "status",
            Command::Log(_) => "log",
            Command::Abort(_) => "abort",
            Command::Recover(_) => "recover",
            Command::Trace(_) => "trace",
            Command::Serve(_) => "serve",
            Command::Simulate(_) => "simulate",
            Command::SimulateParticipant(_) => "simulate-participant",
        }
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["plan", "cmd"])))]
pub struct RunArgs {
    /// Workers started at the same time at most [default: number of CPUs]
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// Stop everything and fail when the whole run takes longer (e.g. 30s, 2m, 500ms)
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Time workers get between SIGTERM and SIGKILL when stopped
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,

    /// After a failure, go on with the workers that do not depend on it
    #[arg(long)]
    pub keep_going: bool,

    /// Longest worker output line shown whole above the progress display (on a terminal);
    /// longer lines are cut there, with a note (e.g. 64K, 16M, 1G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16M")]
    pub max_line: usize,

    /// The plan: a TOML file of [[worker]] tables
    #[arg(long, value_name = "FILE", conflicts_with = "cmd")]
    pub plan: Option<PathBuf>,

    /// One command to run as the operation (arguments passed through as bytes)
    #[arg(last = true, value_name = "CMD", value_parser = clap::value_parser!(OsString))]
    pub cmd: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The operation to join [default: $TOM_LEDGER_OPERATION]
    #[arg(long, value_name = "OP")]
    pub operation: Option<String>,

    /// Description of the call in the ledger [default: the command]
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    /// Stop the command and fail the call when it runs longer
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Time the command gets between SIGTERM and SIGKILL when stopped
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "3s")]
    pub grace: Duration,

    /// A crash of this `exec` (killed, say) does not fail the operation; only its call fails
    #[arg(long)]
    pub no_fail_on_crash: bool,

    /// The command and its arguments (passed through as bytes)
    #[arg(last = true, required = true, value_name = "CMD", value_parser = clap::value_parser!(OsString))]
    pub cmd: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct TempArgs {
    #[command(subcommand)]
    pub action: TempAction,

    /// The operation [default: $TOM_LEDGER_OPERATION]
    #[arg(long, global = true, value_name = "OP")]
    pub operation: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TempAction {
    /// Register paths to delete if the operation fails, is aborted, or its owner crashes
    Add {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Forget registered paths (they are not deleted)
    Rm {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The operation [default: every live operation]
    #[arg(value_name = "OP")]
    pub operation: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    #[arg(value_name = "OP")]
    pub operation: String,

    /// Keep printing new lines until the operation has ended
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct OpArg {
    #[arg(value_name = "OP")]
    pub operation: String,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Only report what would be recovered; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback needs the token
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,

    /// Port to listen on (0: any free port, printed on start)
    #[arg(long, value_name = "PORT", default_value_t = 19880)]
    pub port: u16,

    /// Accept requests without a token (loopback addresses only)
    #[arg(long)]
    pub no_auth: bool,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[arg(value_name = "OP")]
    pub operation: String,

    /// Write to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The smallest `--max-line` accepted.
pub const MIN_SIZE: usize = 1024;
/// The largest `--max-line` accepted: a line is held in memory whole before it is shown.
pub const MAX_SIZE: usize = 1024 * 1024 * 1024;

/// A size in bytes: a number with an optional `K`, `M` or `G` (powers of 1024), between
/// [`MIN_SIZE`] and [`MAX_SIZE`].
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let refuse = || {
        format!(
            "invalid size `{text}`: expected bytes with an optional K, M or G, such as 64K or 16M"
        )
    };
    let unit: u128 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(refuse()),
    };
    if number.is_empty() {
        return Err(refuse());
    }
    // Digits only: anything too long for u128 is too large.
    let bytes = number
        .parse::<u128>()
        .map_or(u128::MAX, |n| n.saturating_mul(unit));
    if bytes > MAX_SIZE as u128 {
        return Err(format!("invalid size `{text}`: too large (at most 1G)"));
    }
    if bytes < MIN_SIZE as u128 {
        return Err(format!("invalid size `{text}`: too small (at least 1K)"));
    }
    Ok(bytes as usize)
}

/// The shortest duration accepted: a timer under a millisecond cannot be kept.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// The longest duration accepted (365 days): anything longer is a mistake, and a deadline
/// this far out still fits every clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration such as `500ms`, `30s`, `2m`, `1h`, `1d` or `1.5s`; a bare number is
/// seconds. Between [`MIN_DURATION`] and [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let refuse = || {
        format!(
            "invalid duration `{text}`: expected a number with a unit, such as 500ms, 30s, 2m, 1h or 1d"
        )
    };
    let value: f64 = number.parse().map_err(|_| refuse())?;
    let unit_seconds = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(refuse()),
    };
    check_duration_seconds(text, value * unit_seconds)
}

/// A duration in seconds within [`MIN_DURATION`]..=[`MAX_DURATION`]; `text` is what the
/// user wrote, for the message.
pub fn check_duration_seconds(text: &str, seconds: f64) -> Result<Duration, String> {
    if !seconds.is_finite() || seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "invalid duration `{text}`: too large (at most 365d)"
        ));
    }
    if seconds < MIN_DURATION.as_secs_f64() {
        return Err(format!(
            "invalid duration `{text}`: too small (at least 1ms)"
        ));
    }
    // Whole milliseconds: what timers and the ledger keep.
    Ok(Duration::from_millis((seconds * 1000.0).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        for bad in ["", "s", "5 parsecs", "-1s", "1..2s", "ms5"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("expected a number with a unit"), "{err}");
        }
        for small in ["0", "0s", "0.0000001", "0.5ms"] {
            let err = parse_duration(small).expect_err(small);
            assert!(err.ends_with("too small (at least 1ms)"), "{err}");
        }
        let huge = "9".repeat(400);
        for large in ["99999999999d", "366d", huge.as_str()] {
            let err = parse_duration(large).expect_err(large);
            assert!(err.ends_with("too large (at most 365d)"), "{err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "K", "1.5M", "-1K", "12X"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains("expected bytes"), "{err}");
        }
        assert!(
            parse_size("1023")
                .unwrap_err()
                .ends_with("too small (at least 1K)")
        );
        let huge = "9".repeat(60);
        for large in ["2G", "99999999999999999999999G", huge.as_str()] {
            let err = parse_size(large).expect_err(large);
            assert!(err.ends_with("too large (at most 1G)"), "{err}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_a_plan_or_a_command() {
        let cli =
            Cli::try_parse_from(["tom-ledger", "run", "-j", "3", "--", "echo", "hi"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.jobs, Some(3));
        assert_eq!(run.cmd, [OsString::from("echo"), OsString::from("hi")]);
        assert!(Cli::try_parse_from(["tom-ledger", "run"]).is_err());
        assert!(Cli::try_parse_from(["tom-ledger", "run", "-j", "0", "--", "true"]).is_err());
        assert!(
            Cli::try_parse_from(["tom-ledger", "run", "--plan", "p.toml", "--", "true"]).is_err()
        );
        let cli = Cli::try_parse_from(["tom-ledger", "status", "--json"]).unwrap();
        assert!(cli.json);
    }
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Scenarios to run, by name
    #[arg(value_name = "SCENARIO", conflicts_with_all = ["all", "list"])]
    pub scenarios: Vec<String>,

    /// Run every scenario
    #[arg(long, conflicts_with = "list")]
    pub all: bool,

    /// Name the scenarios and what each one injects and expects; run nothing
    #[arg(long)]
    pub list: bool,

    /// Where the operation lives: file (a scratch ledger directory), server, etcd
    #[arg(long, value_name = "BACKEND", default_value = "file")]
    pub backend: String,

    /// Keep every call open this many milliseconds longer, to follow a run (at most 60000)
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub pace: u64,

    /// Scenarios from this TOML file instead of the built-in ones
    #[arg(long, value_name = "SCENARIOS.toml")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SimulateParticipantArgs {
    /// The operation to join; without it, create one (the initiator)
    #[arg(long, value_name = "OP")]
    pub operation: Option<String>,

    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub heartbeat_ms: u64,

    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub stale_ms: u64,

    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub cleanup_wait_ms: u64,

    /// The scenario's key prefix on the etcd ledger (`--etcd`)
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
}
