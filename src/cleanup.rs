//! [`CleanupHandler`]: what happens on Ctrl+C, `kill`, or a closed terminal, once the
//! application asks for it.
//!
//! The library installs no signal handler and never ends the process on its own: until
//! the application calls [`CleanupHandler::install`] (or
//! [`install_reporting`](CleanupHandler::install_reporting)), SIGINT, SIGTERM and SIGHUP
//! keep their default disposition. Operations register their part of the cleanup with
//! the handler whether or not it is installed; registering does nothing else.
//!
//! Installed with [`CleanupHandler::install`], on the first SIGINT, SIGTERM or SIGHUP the
//! handler, in this order:
//! 1. runs the *early* callbacks (the ledger sets the abort flag of the operations this
//!    process initiated, so the other participants start stopping at once);
//! 2. runs the stop ladder on every worker group of this process (SIGTERM + SIGCONT, the
//!    grace, SIGKILL; it returns as soon as the groups are gone);
//! 3. runs the *late* callbacks, each bounded by a timeout (the ledger records the outcome
//!    and archives; user callbacks registered with [`CleanupHandler::register`] run here);
//! 4. deletes the registered temp paths;
//! 5. exits with 128 + the signal number (130, 143, 129).
//!
//! A second signal while this runs skips the grace: every worker group is SIGKILLed, the
//! temp paths are deleted, and the process exits at once.
//!
//! Installed with [`CleanupHandler::install_reporting`], the handler only reports each
//! signal to the application ([`StopSignals`]), which decides what to do: nothing is
//! stopped, deleted or exited on its behalf ([`CleanupHandler::cleanup`] and
//! [`CleanupHandler::force`] remain at hand). A program has one handler, installed one
//! way.
//!
//! Job control is a separate opt-in ([`CleanupHandler::install_job_control`]): on SIGTSTP
//! the *pause* callbacks run (the ledger records that this participant is paused), every
//! worker group gets SIGTSTP and the process stops itself; once continued (SIGCONT) the
//! worker groups get SIGCONT and the *resume* callbacks run (the ledger clears the pause
//! and beats). Timeouts of the process layer do not count the time stopped.
//!
//! Caveats: signals are received through tokio's signal driver, so nothing runs inside an
//! async-signal context and nothing is printed; the listener lives on the runtime that was
//! current at installation (one runtime per program is the expected use).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::future::BoxFuture;
use crate::process::{DEFAULT_GRACE, Signal, StopReason, job_control, registry};
use crate::temp_path::{Protected, remove};

/// Id of a registered cleanup callback.
pub type CleanupId = u64;

/// When a callback runs relative to stopping the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CleanupPhase {
    /// Before the workers are stopped (keep it short: set flags, notify).
    Early,
    /// After the workers are stopped (release resources, record outcomes).
    Late,
    /// Job control: before the workers and this process stop on SIGTSTP.
    Pause,
    /// Job control: after this process and its workers continue.
    Resume,
}

type Callback = Arc<dyn Fn(Signal) -> BoxFuture<'static, ()> + Send + Sync>;

struct State {
    callbacks: BTreeMap<CleanupId, (CleanupPhase, Callback)>,
    temps: BTreeSet<PathBuf>,
    /// Ledger directories whose temp paths are registered: never deleted, nor their
    /// ancestors.
    protected: BTreeSet<PathBuf>,
    grace: Duration,
    callback_timeout: Duration,
}

/// The process-wide signal cleanup.
pub struct CleanupHandler {
    state: Mutex<State>,
    next: AtomicU64,
    /// How the handler was installed: [`NOT_INSTALLED`], [`EXITS`] or [`REPORTS`].
    installed: AtomicU8,
    job_control: AtomicBool,
    running: AtomicBool,
}

/// Default bound on each cleanup callback.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

const NOT_INSTALLED: u8 = 0;
/// Installed by [`CleanupHandler::install`]: clean up, then exit.
const EXITS: u8 = 1;
/// Installed by [`CleanupHandler::install_reporting`]: report to the application.
const REPORTS: u8 = 2;

/// The stop signals (SIGINT, SIGTERM, SIGHUP) this process receives, in order, for an
/// application that handles them itself ([`CleanupHandler::install_reporting`]).
pub struct StopSignals {
    received: mpsc::UnboundedReceiver<Signal>,
}

impl StopSignals {
    /// The next stop signal; `None` once the runtime that listens has shut down.
    pub async fn recv(&mut self) -> Option<Signal> {
        self.received.recv().await
    }
}

impl CleanupHandler {
    /// The handler of this process.
    pub fn global() -> &'static CleanupHandler {
        static HANDLER: OnceLock<CleanupHandler> = OnceLock::new();
        HANDLER.get_or_init(|| CleanupHandler {
            state: Mutex::new(State {
                callbacks: BTreeMap::new(),
                temps: BTreeSet::new(),
                protected: BTreeSet::new(),
                grace: DEFAULT_GRACE,
                callback_timeout: DEFAULT_CALLBACK_TIMEOUT,
            }),
            next: AtomicU64::new(0),
            installed: AtomicU8::new(NOT_INSTALLED),
            job_control: AtomicBool::new(false),
            running: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the first signal, after the workers are stopped. Returns its id.
    pub fn register<F, Fut>(&self, f: F) -> CleanupId
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.register_phase(CleanupPhase::Late, move |_| Box::pin(f()))
    }

    /// Run `f` with the signal in the given phase.
    pub fn register_phase(
        &self,
        phase: CleanupPhase,
        f: impl Fn(Signal) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> CleanupId {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().callbacks.insert(id, (phase, Arc::new(f)));
        id
    }

    pub fn unregister(&self, id: CleanupId) {
        self.lock().callbacks.remove(&id);
    }

    /// Delete `path` (a file, a symlink, or a directory with its content) on a signal,
    /// through the same refusal rules as every temp-resource deletion.
    pub fn add_temp_path(&self, path: impl Into<PathBuf>) {
        self.lock().temps.insert(path.into());
    }

    /// Refuse to delete `dir` (a ledger directory) or any ancestor of it.
    pub(crate) fn protect_dir(&self, dir: PathBuf) {
        self.lock().protected.insert(dir);
    }

    pub fn remove_temp_path(&self, path: &Path) {
        self.lock().temps.remove(path);
    }

    /// Grace between SIGTERM and SIGKILL for the workers on the first signal.
    pub fn set_grace(&self, grace: Duration) {
        self.lock().grace = grace;
    }

    /// Bound on each callback.
    pub fn set_callback_timeout(&self, timeout: Duration) {
        self.lock().callback_timeout = timeout;
    }

    /// Take over SIGINT, SIGTERM and SIGHUP on the current tokio runtime: the first one
    /// runs the cleanup and exits the process with 128 + the signal, a second one cuts
    /// the cleanup short (see the module documentation). Once per process; later calls
    /// do nothing. Fails when the handler was installed to report signals instead.
    pub fn install(&'static self) -> Result<()> {
        let mut received = match self.listen(EXITS)? {
            Some(received) => received,
            None => return Ok(()),
        };
        tokio::spawn(async move {
            let Some(first) = received.recv().await else {
                return;
            };
            let code = 128 + first as i32;
            let cleanup = tokio::spawn(async move { self.cleanup(first).await });
            tokio::select! {
                _ = cleanup => {}
                Some(_) = received.recv() => self.force(),
            }
            self.exit(code);
        });
        Ok(())
    }

    /// Listen for SIGINT, SIGTERM and SIGHUP on the current tokio runtime and report
    /// each to the application, which decides what to do: the handler itself stops,
    /// deletes and exits nothing ([`cleanup`](Self::cleanup) and [`force`](Self::force)
    /// are there for an application that wants them). Once per process: fails when the
    /// handler is installed already, either way.
    pub fn install_reporting(&'static self) -> Result<StopSignals> {
        match self.listen(REPORTS)? {
            Some(received) => Ok(StopSignals { received }),
            None => Err(Error::invalid(
                "signal handler",
                "already installed (a process installs it once, in one mode)",
            )),
        }
    }

    /// Start listening in `mode`: the stop signals as they arrive, or `None` when the
    /// handler listens already (in this mode for [`install`](Self::install) to accept).
    fn listen(&'static self, mode: u8) -> Result<Option<mpsc::UnboundedReceiver<Signal>>> {
        if let Err(current) =
            self.installed
                .compare_exchange(NOT_INSTALLED, mode, Ordering::SeqCst, Ordering::SeqCst)
        {
            if current == REPORTS && mode == EXITS {
                return Err(Error::invalid(
                    "signal handler",
                    "already installed to report signals to the application",
                ));
            }
            return Ok(None);
        }
        let mut streams = Vec::new();
        for (kind, sig) in [
            (SignalKind::interrupt(), Signal::SIGINT),
            (SignalKind::terminate(), Signal::SIGTERM),
            (SignalKind::hangup(), Signal::SIGHUP),
        ] {
            match signal(kind) {
                Ok(s) => streams.push((s, sig)),
                Err(e) => {
                    self.installed.store(NOT_INSTALLED, Ordering::SeqCst);
                    return Err(Error::io("listen for", format!("{sig}"), e));
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for (mut stream, sig) in streams {
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Some(rx))
    }

    /// Opt in to job control: handle SIGTSTP and SIGCONT on the current tokio runtime
    /// (once per process; later calls do nothing). For a program whose Ctrl+Z should
    /// stop it together with its workers, which live in process groups of their own and
    /// never see the terminal's SIGTSTP. See the module documentation.
    pub fn install_job_control(&'static self) -> Result<()> {
        if self.job_control.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let listen = |sig: Signal| {
            signal(SignalKind::from_raw(sig as i32)).map_err(|e| {
                self.job_control.store(false, Ordering::SeqCst);
                Error::io("listen for", format!("{sig}"), e)
            })
        };
        let mut tstp = listen(Signal::SIGTSTP)?;
        let mut cont = listen(Signal::SIGCONT)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = tstp.recv() => self.pause().await,
                    Some(()) = cont.recv() => self.resume().await,
                    else => break,
                }
            }
        });
        Ok(())
    }

    /// SIGTSTP: record the pause, stop every worker group, then this process; once it
    /// runs again, resume.
    async fn pause(&self) {
        if self.is_running() || job_control().is_paused() {
            return;
        }
        self.run_phase(CleanupPhase::Pause, Signal::SIGTSTP).await;
        job_control().stop_workers();
        job_control().stop_self();
        self.resume().await;
    }

    /// SIGCONT: continue every worker group; if this process had paused, run the resume
    /// callbacks.
    async fn resume(&self) {
        if job_control().continue_workers().is_some() {
            self.run_phase(CleanupPhase::Resume, Signal::SIGCONT).await;
        }
    }

    async fn run_phase(&self, phase: CleanupPhase, sig: Signal) {
        let (callbacks, timeout) = {
            let state = self.lock();
            let picked: Vec<Callback> = state
                .callbacks
                .values()
                .filter(|(p, _)| *p == phase)
                .map(|(_, f)| f.clone())
                .collect();
            (picked, state.callback_timeout)
        };
        run_all(&callbacks, sig, timeout).await;
    }

    /// The whole first-signal cleanup (without exiting). Runs once; a second call
    /// returns at once. Returns the exit code, 128 + the signal number.
    pub async fn cleanup(&self, sig: Signal) -> i32 {
        let code = 128 + sig as i32;
        if self.running.swap(true, Ordering::SeqCst) {
            return code;
        }
        let (early, late, grace, timeout) = {
            let state = self.lock();
            let pick = |phase| {
                state
                    .callbacks
                    .values()
                    .filter(|(p, _)| *p == phase)
                    .map(|(_, f)| f.clone())
                    .collect::<Vec<_>>()
            };
            (
                pick(CleanupPhase::Early),
                pick(CleanupPhase::Late),
                state.grace,
                state.callback_timeout,
            )
        };
        run_all(&early, sig, timeout).await;
        registry()
            .stop_all(Some(grace), StopReason::Shutdown(sig))
            .await;
        run_all(&late, sig, timeout).await;
        self.delete_temps();
        code
    }

    /// Whether a signal cleanup is under way.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Call before returning from `main`: if the handler installed by
    /// [`install`](Self::install) is cleaning up after a signal, wait for it (it ends the
    /// process with 128 + the signal); otherwise return at once. Without it, `main`
    /// returning as the operation fails under a signal would cut the cleanup short.
    pub async fn settle(&self) {
        if self.is_running() && self.installed.load(Ordering::SeqCst) == EXITS {
            std::future::pending::<()>().await;
        }
    }

    /// The second signal: kill every worker group now and delete the temp paths.
    pub fn force(&self) {
        registry().kill_all(StopReason::Shutdown(Signal::SIGKILL));
        self.delete_temps();
    }

    /// Delete the temp paths through the one removal function; what it refuses or
    /// cannot delete is reported on the log (no operation log is at hand here).
    fn delete_temps(&self) {
        let (temps, protected) = {
            let mut state = self.lock();
            let temps: Vec<PathBuf> = std::mem::take(&mut state.temps).into_iter().collect();
            (temps, state.protected.clone())
        };
        if temps.is_empty() {
            return;
        }
        let protected = Protected::new(protected.iter().map(PathBuf::as_path));
        for path in temps {
            if let Some(line) = remove(&path, &protected).report(&path) {
                tracing::warn!("{line}");
            }
        }
    }

    fn exit(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Run callbacks concurrently (one slow callback does not hold up the others), each
/// bounded by `timeout`.
async fn run_all(callbacks: &[Callback], sig: Signal, timeout: Duration) {
    let tasks: Vec<_> = callbacks
        .iter()
        .map(|f| {
            let fut = f(sig);
            tokio::spawn(async move {
                if tokio::time::timeout(timeout, fut).await.is_err() {
                    tracing::warn!(?timeout, "cleanup callback timed out");
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}
