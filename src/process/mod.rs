//! Process supervision: starting workers, knowing them again, stopping their whole tree.
//!
//! This layer knows nothing of ledgers, calls or operations; the ledger records what it
//! reports ([`WorkerInfo`], [`RecordedGroup`]) and maps its errors to calls.
//!
//! # Design
//!
//! - **One process group per worker.** Every worker is started with `process_group(0)`,
//!   so a signal to `-pgid` reaches everything it started, unless a descendant leaves
//!   the group with `setsid`. The optional escape-proof mode ([`EscapeProof`]) adds a
//!   cgroup v2 per worker (`cgroup.kill` catches everything), or where none can be made,
//!   a child-subreaper fallback that finds descendants through the parent-pid tree and an
//!   inherited environment tag.
//! - **Stop ladder.** SIGTERM + SIGCONT to the group, up to a grace (5 s by default) for
//!   it to go, then SIGKILL. The ladder polls for the group's disappearance (a few
//!   milliseconds apart) and returns as soon as it is gone; zombies do not count, and our
//!   own child is reaped on the way. See [`stop`](Worker::stop) and [`StopOutcome`].
//! - **Identity, not pids.** A pid is reused; a [`ProcessIdentity`] (pid, start ticks,
//!   boot id) is not. [`stop_recorded`] stops a group recorded by another, possibly dead,
//!   process only after checking that identity, and never signals a pid whose start time
//!   differs.
//! - **Parent death.** Workers get a parent-death signal (SIGKILL by default) so they do
//!   not outlive a supervisor killed with SIGKILL. Linux ties that signal to the thread
//!   that created the worker, so such workers are created on a thread that lives as long
//!   as the process: the main thread when they are spawned from it, else one dedicated
//!   spawner thread (see [`WorkerCommand::spawn`]).
//! - **Cheap spawn.** A worker that needs work before `exec` (the parent-death signal, the
//!   move into its cgroup) is created with `clone(CLONE_VM | CLONE_VFORK)` as
//!   `posix_spawn` does, not with a `fork` that copies the supervisor's page tables, and
//!   this layer waits for it through a pidfd (see [`SpawnMethod`]).
//! - **Registry.** Every live worker group is in a process-wide [`Registry`], so the
//!   signal handler can stop all of them at once ([`Registry::stop_all`]) or kill them
//!   on a second Ctrl+C ([`Registry::kill_all`]).
//! - **Job control.** [`JobControl`] stops every registered group with SIGTSTP and
//!   continues it with SIGCONT, for a supervisor that handles Ctrl+Z itself; the time
//!   spent paused does not count against any timeout of this layer ([`PausableDeadline`]).
//! - **Runners.** [`run_stdio`] and [`run_file_result`] take a worker from start to
//!   result: bounded stdout, stderr streamed through a line decoder that handles lines
//!   across chunk boundaries ([`LineDecoder`]), timeouts and cancellation through the
//!   ladder, and the stderr tail in the error of a failed worker.
//!
//! Linux only: it reads `/proc`, uses `prctl`, pidfds and cgroups.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tom_dist_ledger::process::{RunOptions, WorkerCommand, run_stdio};
//!
//! # async fn demo() -> tom_dist_ledger::Result<()> {
//! let opts = RunOptions::default()
//!     .timeout(Duration::from_secs(30))
//!     .on_spawn(|info| println!("started pid {} (group {})", info.pid, info.pgid))
//!     .on_stderr(|line| eprintln!("worker: {line}"));
//! let out = run_stdio(WorkerCommand::new("echo").arg(r#"{"ok":true}"#), opts).await?;
//! assert_eq!(out.data, b"{\"ok\":true}\n");
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod cgroup;
mod child;
mod exit;
mod group;
mod identity;
mod lines;
mod pause;
mod procfs;
mod recorded;
mod registry;
mod run;
mod run_options;
mod signal;
mod spawn;
mod stop;
mod vfork;
mod vfork_args;
mod worker;

pub use exit::exited;
pub use identity::{ProcessIdentity, boot_id, hostname, pid_namespace, user_id};
pub use lines::{DEFAULT_MAX_LINE, LineDecoder, LineTail, TRUNCATED_MARK};
pub use pause::{JobControl, PausableDeadline, PausedTime, job_control};
pub use recorded::{
    PlannedProcess, RecordedGroup, RecordedStop, StopPlan, Verdict, plan_recorded, stop_recorded,
};
pub use registry::{Registry, registry};
pub use run::{RunOutput, run_file_result, run_stdio, run_to_exit};
pub use run_options::{
    DEFAULT_MAX_STDOUT, DEFAULT_STDERR_TAIL, ExitCallback, LineCallback, RunOptions, SpawnCallback,
};
pub use signal::{Signal, StopReason, signal_group, signal_pid};
pub use spawn::{EscapeProof, SpawnMethod, StdioMode, WORKER_TAG_VAR, WorkerCommand};
pub use stop::{DEFAULT_GRACE, KILL_WAIT, StopEnd, StopOutcome};
pub use worker::{Worker, WorkerInfo};
