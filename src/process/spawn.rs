//! Building and starting workers.
//!
//! Every worker leads its own process group, so one signal reaches its whole tree. Two
//! options need code between the creation of the process and its `exec`:
//!
//! - **Parent-death signal** (on by default, SIGKILL): `prctl(PR_SET_PDEATHSIG)`, so a
//!   worker does not outlive a supervisor that was SIGKILLed. Caveat: Linux sends it when
//!   the *thread* that created the worker exits, not the process. Tokio's blocking-pool
//!   threads exit after idling, and a runtime's threads exit with the runtime; a worker
//!   created there would be killed by surprise. So workers with a parent-death signal are
//!   created on a thread that lives as long as the process: the main thread when `spawn`
//!   is called there (a current-thread runtime in `main`, as the CLI runs; returning from
//!   `main` ends the process), else one dedicated spawner thread, at the price of a hop
//!   to it and back. The signal reaches the worker only, not its descendants: those are
//!   stopped through the recorded group (see [`stop_recorded`](super::stop_recorded)) or
//!   the cgroup.
//! - **Escape-proof** (off by default): the worker runs in a cgroup of its own, see
//!   `cgroup.rs`.
//!
//! Such workers are started as `posix_spawn` starts processes, with
//! `clone(CLONE_VM | CLONE_VFORK)` and the extra steps done in the child before `execve`
//! (`vfork.rs`, [`SpawnMethod::Vfork`]), and waited for through a pidfd by this layer
//! rather than by Tokio. The standard library's way, a `pre_exec` hook, makes it `fork`
//! (copying the supervisor's page tables) instead of taking its `posix_spawn` path; it is
//! kept as [`SpawnMethod::Fork`], and taken on kernels without pidfds. Workers that need
//! neither option always go through Tokio and the standard library's `posix_spawn` path.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::Handle;

use super::cgroup::{Cgroup, enable_subreaper};
use super::child::{Child, DirectChild};
use super::group::{Containment, Group};
use super::identity::{ProcessIdentity, boot_tick_now};
use super::registry::registry;
use super::signal::Signal;
use super::vfork::{self, Prepared, Request};
use super::worker::{Worker, WorkerInfo};
use crate::error::{Error, Result};

/// Environment variable that tags every descendant of an escape-proof worker in the
/// fallback mode without cgroups.
pub const WORKER_TAG_VAR: &str = "TOM_LEDGER_WORKER_TAG";

/// Where a worker's standard stream goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StdioMode {
    /// `/dev/null`.
    #[default]
    Null,
    /// A pipe the caller reads from (or writes to, for stdin).
    Piped,
    /// The supervisor's own stream.
    Inherit,
    /// The supervisor's stderr (a worker's stdout kept off the supervisor's stdout, when
    /// that is reserved for machine-readable output).
    Stderr,
}

impl StdioMode {
    fn to_std(self) -> io::Result<std::process::Stdio> {
        Ok(match self {
            StdioMode::Null => std::process::Stdio::null(),
            StdioMode::Piped => std::process::Stdio::piped(),
            StdioMode::Inherit => std::process::Stdio::inherit(),
            StdioMode::Stderr => {
                use std::os::fd::AsFd;
                std::process::Stdio::from(io::stderr().as_fd().try_clone_to_owned()?)
            }
        })
    }
}

/// How hard descendants are kept from escaping the stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapeProof {
    /// The process group only: a descendant that calls `setsid` escapes.
    #[default]
    Off,
    /// A cgroup v2 of its own when one can be created, else the subreaper fallback.
    Auto,
    /// A cgroup v2 of its own, or spawning fails.
    Cgroup,
    /// The fallback without cgroups: child subreaper, parent-pid tree, environment tag.
    Subreaper,
}

/// How a worker with a parent-death signal or a cgroup is started (a worker with neither
/// always takes the standard library's `posix_spawn` path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpawnMethod {
    /// `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does internally: the child
    /// borrows the supervisor's memory until its `execve`, while the calling thread waits,
    /// so nothing is copied. The worker is then waited for through a pidfd by this layer.
    /// On kernels without pidfds (before Linux 5.3), [`Fork`](SpawnMethod::Fork) is used.
    ///
    /// Caveats, and differences from `Fork`:
    ///
    /// - Until its `execve` the child runs on the supervisor's memory: it only makes
    ///   system calls on values prepared before (argv, environment, paths, descriptors).
    ///   The calling thread blocks every signal during the `clone`; the child resets every
    ///   caught signal and SIGPIPE to the default action and unblocks all signals before
    ///   `execve`, so the worker starts as the standard library starts processes.
    /// - A program name without a slash is looked up in the worker's `PATH` (the one set
    ///   with [`env`](WorkerCommand::env), else the supervisor's, else `/bin:/usr/bin`) as
    ///   `execvp` does; a file without a `#!` line is not run through `/bin/sh` (as with
    ///   `posix_spawnp`).
    /// - The worker is reaped by `waitpid` on its own pid: code in the same process that
    ///   reaps any child (`waitpid(-1)`, e.g. a SIGCHLD handler that reaps everything)
    ///   would take its exit status, and [`Worker::wait`](super::Worker::wait) then fails.
    ///   Tokio does not do that.
    /// - A [`Worker`](super::Worker) dropped before its process was reaped has its group
    ///   killed (as with `Fork`); the process is then reaped by a short-lived thread.
    #[default]
    Vfork,
    /// The standard library's `fork` with a `pre_exec` hook, waited for by Tokio.
    Fork,
}

/// A worker to start: program, arguments, environment and supervision options.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    program: OsString,
    arg0: Option<OsString>,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    stdin: StdioMode,
    /// `None` until set: spawned as inherited, piped by the runners (which read it).
    stdout: Option<StdioMode>,
    stderr: Option<StdioMode>,
    parent_death: Option<Signal>,
    escape: EscapeProof,
    method: SpawnMethod,
}

impl WorkerCommand {
    /// A worker running `program` (looked up in `PATH` if it has no slash). Defaults:
    /// stdin null, stdout and stderr inherited, parent-death signal SIGKILL, not
    /// escape-proof.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        WorkerCommand {
            program: program.as_ref().to_owned(),
            arg0: None,
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stdin: StdioMode::Null,
            stdout: None,
            stderr: None,
            parent_death: Some(Signal::SIGKILL),
            escape: EscapeProof::Off,
            method: SpawnMethod::Vfork,
        }
    }

    /// The name the worker sees as `argv[0]` (default: the program as given), e.g. the
    /// command as the user wrote it when `program` is the path it resolved to.
    pub fn arg0(mut self, name: impl AsRef<OsStr>) -> Self {
        self.arg0 = Some(name.as_ref().to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Adds (or overrides) one environment variable; the rest is inherited.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn stdin(mut self, mode: StdioMode) -> Self {
        self.stdin = mode;
        self
    }

    pub fn stdout(mut self, mode: StdioMode) -> Self {
        self.stdout = Some(mode);
        self
    }

    pub fn stderr(mut self, mode: StdioMode) -> Self {
        self.stderr = Some(mode);
        self
    }

    /// The signal the worker gets when the supervisor dies, or `None` for no such signal
    /// (then, unless escape-proof, the worker goes through Tokio and the standard
    /// library's `posix_spawn` path).
    ///
    /// Linux delivers it when the thread that created the worker ends; this crate creates
    /// such workers on a thread that lives as long as the process (the calling thread if it
    /// is the main thread, else a dedicated spawner thread), so the signal comes only when
    /// the supervisor process itself ends (exits, crashes, is killed). It reaches the
    /// worker alone: its own children are stopped through the recorded group or the
    /// cgroup.
    pub fn parent_death_signal(mut self, signal: Option<Signal>) -> Self {
        self.parent_death = signal;
        self
    }

    /// Escape-proof containment: `true` is [`EscapeProof::Auto`].
    pub fn escape_proof(self, on: bool) -> Self {
        self.escape_mode(if on {
            EscapeProof::Auto
        } else {
            EscapeProof::Off
        })
    }

    pub fn escape_mode(mut self, mode: EscapeProof) -> Self {
        self.escape = mode;
        self
    }

    /// How the worker is started when it has a parent-death signal or a cgroup; see
    /// [`SpawnMethod`]. The default, [`SpawnMethod::Vfork`], is the cheaper.
    pub fn spawn_method(mut self, method: SpawnMethod) -> Self {
        self.method = method;
        self
    }

    /// The program as given.
    /// Pipe stdout and stderr where the caller has not said where they go (the runners
    /// read them: lines to callbacks, the stderr tail into errors).
    pub(crate) fn pipe_unset_output(mut self) -> Self {
        self.stdout.get_or_insert(StdioMode::Piped);
        self.stderr.get_or_insert(StdioMode::Piped);
        self
    }

    fn stdout_mode(&self) -> StdioMode {
        self.stdout.unwrap_or(StdioMode::Inherit)
    }

    fn stderr_mode(&self) -> StdioMode {
        self.stderr.unwrap_or(StdioMode::Inherit)
    }

    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Program and arguments, for records and messages.
    pub fn command_line(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// Starts the worker in a process group of its own and registers it in the
    /// process-wide [`registry`](super::registry()).
    ///
    /// Must be called within a Tokio runtime (with I/O and time enabled). Blocks the
    /// calling thread until the worker has called `execve` (well under a millisecond
    /// normally). With a parent-death signal, called from any thread but the main thread,
    /// the process is created on the dedicated spawner thread, and the call waits for it
    /// (two thread wake-ups more).
    ///
    /// A missing or non-executable program is [`Error::Spawn`] naming it.
    pub fn spawn(&self) -> Result<Worker> {
        let fail = |source: io::Error| Error::Spawn {
            program: self.program(),
            source,
        };
        let handle = Handle::try_current().map_err(|_| {
            fail(io::Error::other(
                "workers must be spawned within a tokio runtime",
            ))
        })?;
        let mut containment = self.containment().map_err(fail)?;
        let tag = match &containment {
            Containment::Tree { tag, .. } => tag.split_once('='),
            _ => None,
        };
        let cgroup_fd = match &containment {
            Containment::Cgroup(cg) => cg.procs_fd(),
            _ => None,
        };
        let hook = cgroup_fd.is_some() || self.parent_death.is_some();
        // The kernel stamps the child's start time between these two readings of the
        // same clock: when both fall in one clock tick, that tick is its start time, and
        // `/proc/PID/stat` (costly to generate, once per worker) need not be read.
        let tick_before = boot_tick_now();
        let spawned = if hook && self.method == SpawnMethod::Vfork && vfork::supported() {
            self.spawn_direct(tag, cgroup_fd)
        } else {
            self.spawn_tokio(tag, cgroup_fd, handle)
        };
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Containment::Cgroup(cg) = &containment {
                    let _ = cg.remove();
                }
                return Err(fail(e));
            }
        };
        if let Containment::Cgroup(cg) = &mut containment {
            cg.spawned();
        }
        let pid = child
            .id()
            .ok_or_else(|| fail(io::Error::other("the worker has no pid")))?
            as i32;
        let tick_after = boot_tick_now();
        let bracketed = tick_before.filter(|_| tick_before == tick_after);
        let identity = match bracketed {
            Some(start_ticks) => Some(ProcessIdentity {
                pid,
                start_ticks,
                boot_id: super::identity::boot_id().map(str::to_owned),
                pid_ns: super::identity::pid_namespace(),
            }),
            None => ProcessIdentity::of(pid),
        }
        .unwrap_or_else(|| ProcessIdentity {
            pid,
            start_ticks: 0,
            boot_id: super::identity::boot_id().map(str::to_owned),
            pid_ns: super::identity::pid_namespace(),
        });
        let info = WorkerInfo {
            pid,
            pgid: pid,
            cgroup: match &containment {
                Containment::Cgroup(cg) => Some(cg.path().to_path_buf()),
                _ => None,
            },
            identity: identity.clone(),
            command: self.command_line(),
        };
        let group = Arc::new(Group::new(pid, identity.start_ticks, containment));
        let registration = registry().insert(group.clone());
        Ok(Worker::new(
            child,
            info,
            group,
            registration,
            self.program(),
        ))
    }

    /// Through Tokio: the standard library's `posix_spawn` path, or `fork` with a
    /// `pre_exec` hook when there is a parent-death signal or a cgroup.
    fn spawn_tokio(
        &self,
        tag: Option<(&str, &str)>,
        cgroup_fd: Option<std::os::fd::RawFd>,
        handle: Handle,
    ) -> io::Result<Child> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(self.stdin.to_std()?)
            .stdout(self.stdout_mode().to_std()?)
            .stderr(self.stderr_mode().to_std()?)
            .process_group(0)
            .kill_on_drop(false);
        if let Some(name) = &self.arg0 {
            cmd.arg0(name);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        if let Some((k, v)) = tag {
            cmd.env(k, v);
        }
        if cgroup_fd.is_some() || self.parent_death.is_some() {
            install_pre_exec(&mut cmd, cgroup_fd, self.parent_death);
        }
        let child = if self.parent_death.is_some() {
            on_spawner_thread(move || {
                let _runtime = handle.enter();
                cmd.spawn()
            })?
        } else {
            cmd.spawn()
        };
        child.map(Child::Tokio)
    }

    /// With `clone(CLONE_VM | CLONE_VFORK)`, see `vfork.rs`. With a parent-death signal,
    /// from a thread that lives as long as the process: the calling thread if it is the
    /// main thread (a current-thread runtime in `main`, as the CLI runs), else the spawner
    /// thread (a hop that costs two thread wake-ups, about 0.1 ms on a small VM).
    fn spawn_direct(
        &self,
        tag: Option<(&str, &str)>,
        cgroup_fd: Option<std::os::fd::RawFd>,
    ) -> io::Result<Child> {
        let mut env: Vec<(&OsStr, &OsStr)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
            .collect();
        if let Some((k, v)) = tag {
            env.push((OsStr::new(k), OsStr::new(v)));
        }
        let request = Request {
            program: &self.program,
            argv0: self.arg0.as_deref().unwrap_or(&self.program),
            args: &self.args,
            cwd: self.cwd.as_deref(),
            env,
            stdio: [self.stdin, self.stdout_mode(), self.stderr_mode()],
            cgroup_procs: cgroup_fd,
            parent_death: self.parent_death,
        };
        let (prepared, ends) = Prepared::new(&request)?;
        let spawned = if self.parent_death.is_some() && !on_main_thread() {
            on_spawner_thread(move || prepared.spawn())??
        } else {
            prepared.spawn()?
        };
        DirectChild::new(spawned, ends).map(Child::Direct)
    }

    fn containment(&self) -> io::Result<Containment> {
        let tree = || {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            enable_subreaper();
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let me = ProcessIdentity::current().map_or(0, |m| m.start_ticks);
            Containment::Tree {
                tag: format!("{WORKER_TAG_VAR}={}-{me}-{n}", std::process::id()),
                seen: Mutex::default(),
            }
        };
        Ok(match self.escape {
            EscapeProof::Off => Containment::Group,
            EscapeProof::Subreaper => tree(),
            EscapeProof::Auto => match Cgroup::create() {
                Ok(Some(cg)) => Containment::Cgroup(cg),
                Ok(None) => tree(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create a cgroup; using the process tree");
                    tree()
                }
            },
            EscapeProof::Cgroup => match Cgroup::create()? {
                Some(cg) => Containment::Cgroup(cg),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "no writable cgroup v2 hierarchy for escape-proof mode",
                    ));
                }
            },
        })
    }
}

/// Installs the hook that runs in the child between `fork` and `exec`.
///
/// It only makes system calls on values prepared before the fork: async-signal-safe, no
/// allocation, no lock (the child of a multi-threaded process may not take either).
fn install_pre_exec(
    cmd: &mut tokio::process::Command,
    cgroup_procs: Option<std::os::fd::RawFd>,
    parent_death: Option<Signal>,
) {
    let parent = std::process::id() as libc::pid_t;
    let hook = move || -> io::Result<()> {
        if let Some(fd) = cgroup_procs {
            // SAFETY: write(2) of a static buffer to a descriptor opened before the fork.
            if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(sig) = parent_death {
            let sig = sig as libc::c_int;
            // SAFETY: prctl and getppid with integer arguments are async-signal-safe.
            unsafe {
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The supervisor died before the prctl took effect: act as if it came.
                if libc::getppid() != parent {
                    libc::raise(sig);
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook is async-signal-safe, see above.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Whether the calling thread is the process's main thread.
///
/// The main thread ends with the process: returning from `main` or `exit` ends every
/// thread at once. (Only a main thread that calls `pthread_exit` itself while other threads
/// go on would end first, and fire the parent-death signal of the workers it created.)
fn on_main_thread() -> bool {
    // SAFETY: gettid and getpid take no arguments and cannot fail.
    unsafe { libc::gettid() == libc::getpid() }
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Runs `job` on the long-lived spawner thread and returns its result, so that the
/// parent-death signal of the workers it creates fires only when the whole process ends.
fn on_spawner_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(sender) = sender else {
        return Err(io::Error::other("cannot start the worker spawner thread"));
    };
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let job: SpawnJob = Box::new(move || {
        let _ = reply_tx.send(job());
    });
    sender
        .send(job)
        .map_err(|_| io::Error::other("the worker spawner thread has stopped"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the worker spawner thread has stopped"))
}
