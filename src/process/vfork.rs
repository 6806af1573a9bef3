//! Starting a worker with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does
//! internally, plus the steps before `exec` that `posix_spawn` cannot express: the
//! parent-death signal and the move into the worker's cgroup.
//!
//! A `fork` copies the supervisor's page tables and then pays a copy-on-write fault for
//! every page either side touches before the `exec`; with `CLONE_VM` the child borrows the
//! supervisor's memory instead, and `CLONE_VFORK` suspends the calling thread until the
//! child has called `execve` (or exited). The child runs on a small stack of its own.
//!
//! Because the child shares the supervisor's memory until `exec`, it must not allocate,
//! take a lock, or run any signal handler of the supervisor. So:
//!
//! - everything it needs (argv, envp, the candidate paths of the program, the working
//!   directory, the descriptors of its standard streams) is prepared before the clone
//!   ([`Prepared::new`]), and the child only makes system calls on it;
//! - the calling thread blocks every signal around the clone, so the child starts with
//!   every signal blocked; it resets every caught signal to its default action, and
//!   SIGPIPE too (as the standard library does), before it unblocks them all just before
//!   `execve`;
//! - a failure is reported through memory shared with the parent (errno and the step
//!   that failed), after which the child exits with 127 and the parent reaps it.
//!
//! The program is looked up the way `execvp` does: a name without a slash is tried in
//! every directory of the worker's `PATH` (the one the command sets, else the
//! supervisor's, else `/bin:/usr/bin`) in order, skipping directories where it is not
//! found or not executable. Unlike `execvp` (and like `posix_spawnp`), a file without a
//! `#!` line is not handed to `/bin/sh`.

use std::cell::RefCell;
use std::ffi::{CString, OsStr, OsString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use super::signal::Signal;
use super::spawn::StdioMode;
use super::vfork_args::{
    above_stdio, candidates, cstring, environment, null_terminated, open_dev_null, pipe,
};

/// Size of the stack the child runs on before `exec` (it needs a few hundred bytes; the
/// rest is margin for the C library's system call wrappers).
const CHILD_STACK: usize = 64 * 1024;

/// Highest signal number on Linux.
const MAX_SIGNAL: c_int = 64;

/// What the worker gets, as given by `WorkerCommand`.
pub(super) struct Request<'a> {
    pub program: &'a OsStr,
    pub argv0: &'a OsStr,
    pub args: &'a [OsString],
    pub cwd: Option<&'a Path>,
    /// Variables set on top of the supervisor's environment; the last one of a name wins.
    pub env: Vec<(&'a OsStr, &'a OsStr)>,
    /// stdin, stdout, stderr.
    pub stdio: [StdioMode; 3],
    /// A `cgroup.procs` descriptor to write `0` to.
    pub cgroup_procs: Option<RawFd>,
    pub parent_death: Option<Signal>,
}

/// Everything the child needs, prepared before the clone.
pub(super) struct Prepared {
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// The paths `execve` is tried with, in order.
    candidates: Vec<CString>,
    cwd: Option<CString>,
    /// The descriptor each standard stream is set to (all above 2), `-1` to inherit.
    stdio: [RawFd; 3],
    /// Owns the descriptors in `stdio`.
    _child_fds: Vec<OwnedFd>,
    cgroup_procs: RawFd,
    parent_death: c_int,
    parent: libc::pid_t,
}

/// The supervisor's ends of the piped streams: stdin (write end), stdout and stderr (read
/// ends).
pub(crate) type ParentEnds = [Option<OwnedFd>; 3];

/// A child that has called `execve`.
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

/// Whether this kernel has what the direct path needs besides `clone` (pidfds, Linux 5.3).
pub(super) fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| pidfd_open(std::process::id() as libc::pid_t).is_ok())
}

impl Prepared {
    pub fn new(req: &Request<'_>) -> io::Result<(Prepared, ParentEnds)> {
        let argv = std::iter::once(req.argv0)
            .chain(req.args.iter().map(OsString::as_os_str))
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let (envp, path) = environment(&req.env)?;
        let candidates = candidates(req.program, path.as_deref())?;
        let cwd = req
            .cwd
            .map(|d| cstring(d.as_os_str().as_bytes()))
            .transpose()?;
        let mut child_fds = Vec::new();
        let mut parent_ends: ParentEnds = [None, None, None];
        let mut stdio = [-1; 3];
        let mut null: Option<RawFd> = None;
        for (i, mode) in req.stdio.iter().enumerate() {
            let fd = match mode {
                StdioMode::Inherit => continue,
                StdioMode::Null => match null {
                    Some(fd) => fd,
                    None => {
                        let fd = open_dev_null()?;
                        let raw = fd.as_raw_fd();
                        child_fds.push(fd);
                        null = Some(raw);
                        raw
                    }
                },
                StdioMode::Stderr => {
                    let fd = above_stdio(libc::STDERR_FILENO)?;
                    let raw = fd.as_raw_fd();
                    child_fds.push(fd);
                    raw
                }
                StdioMode::Piped => {
                    let (read, write) = pipe()?;
                    let (ours, theirs) = if i == 0 { (write, read) } else { (read, write) };
                    parent_ends[i] = Some(ours);
                    let raw = theirs.as_raw_fd();
                    child_fds.push(theirs);
                    raw
                }
            };
            stdio[i] = fd;
        }
        let prepared = Prepared {
            argv,
            envp,
            candidates,
            cwd,
            stdio,
            _child_fds: child_fds,
            cgroup_procs: req.cgroup_procs.unwrap_or(-1),
            parent_death: req.parent_death.map_or(0, |s| s as c_int),
            parent: std::process::id() as libc::pid_t,
        };
        Ok((prepared, parent_ends))
    }

    /// Clones the child and waits until it has called `execve` (or failed). The
    /// parent-death signal is tied to the calling thread.
    pub fn spawn(&self) -> io::Result<Spawned> {
        let argv = null_terminated(&self.argv);
        let envp = null_terminated(&self.envp);
        let candidates: Vec<*const c_char> = self.candidates.iter().map(|c| c.as_ptr()).collect();
        let args = ChildArgs {
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            candidates: candidates.as_ptr(),
            candidate_count: candidates.len(),
            cwd: self.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdio: self.stdio,
            cgroup_procs: self.cgroup_procs,
            parent_death: self.parent_death,
            parent: self.parent,
            errno: AtomicI32::new(0),
            step: AtomicI32::new(Step::None as i32),
        };
        let pid = STACK
            .try_with(|cell| -> io::Result<libc::pid_t> {
                let mut cell = cell.borrow_mut();
                let stack = match &mut *cell {
                    Some(stack) => stack,
                    None => cell.insert(ChildStack::new()?),
                };
                let blocked = BlockedSignals::all()?;
                // SAFETY: the child runs `child_main` on a stack of its own that nothing else
                // uses while this thread is suspended (CLONE_VFORK), with `args`, which lives on
                // this frame until `clone` returns. It only makes async-signal-safe system calls
                // and ends in `execve` or `_exit`.
                let pid = unsafe {
                    libc::clone(
                        child_main,
                        stack.top(),
                        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                        (&raw const args).cast_mut().cast(),
                    )
                };
                let error = io::Error::last_os_error();
                drop(blocked);
                if pid < 0 { Err(error) } else { Ok(pid) }
            })
            .map_err(|_| io::Error::other("the spawning thread is ending"))??;
        let errno = args.errno.load(Ordering::Acquire);
        if errno != 0 {
            reap_blocking(pid);
            let step = Step::from(args.step.load(Ordering::Acquire));
            return Err(step.error(errno));
        }
        match pidfd_open(pid) {
            Ok(pidfd) => Ok(Spawned { pid, pidfd }),
            Err(e) => {
                // Cannot watch it: do not leave it running unsupervised.
                // SAFETY: kill(2) on the group our unreaped child leads.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                reap_blocking(pid);
                Err(e)
            }
        }
    }
}

/// The child's view of [`Prepared`]: raw pointers into it, and where to report a failure.
struct ChildArgs {
    argv: *const *const c_char,
    envp: *const *const c_char,
    candidates: *const *const c_char,
    candidate_count: usize,
    cwd: *const c_char,
    stdio: [RawFd; 3],
    cgroup_procs: RawFd,
    parent_death: c_int,
    parent: libc::pid_t,
    /// Written by the child when a step fails; read by the parent once `clone` returns.
    errno: AtomicI32,
    step: AtomicI32,
}

/// The step of the child that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
enum Step {
    None = 0,
    ProcessGroup,
    Cgroup,
    ParentDeath,
    ParentGone,
    Stdio,
    Chdir,
    Exec,
}

impl From<i32> for Step {
    fn from(n: i32) -> Step {
        [
            Step::ProcessGroup,
            Step::Cgroup,
            Step::ParentDeath,
            Step::ParentGone,
            Step::Stdio,
            Step::Chdir,
            Step::Exec,
        ]
        .into_iter()
        .find(|s| *s as i32 == n)
        .unwrap_or(Step::None)
    }
}

impl Step {
    /// The error as `spawn` reports it: the plain OS error for `execve` (as the standard
    /// library reports it), with the step named otherwise.
    fn error(self, errno: i32) -> io::Error {
        let os = io::Error::from_raw_os_error(errno);
        let step = match self {
            Step::Exec | Step::None => return os,
            Step::ProcessGroup => "setpgid",
            Step::Cgroup => "cannot move into the worker's cgroup",
            Step::ParentDeath => "prctl(PR_SET_PDEATHSIG)",
            Step::ParentGone => "the supervisor ended while the worker started",
            Step::Stdio => "cannot set up the standard streams",
            Step::Chdir => "cannot change to the working directory",
        };
        io::Error::new(os.kind(), format!("{step}: {os}"))
    }
}

/// The child, from `clone` to `execve`. Never returns.
///
/// Only async-signal-safe system calls on memory prepared by the parent: no allocation,
/// no lock, no panic path.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` points to the parent's `ChildArgs`, alive while the parent is
    // suspended, i.e. until this child calls `execve` or `_exit`.
    let a = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: see `child_steps`.
    unsafe { child_steps(a) }
}

/// # Safety
///
/// Only to be run in the child of `Prepared::spawn`, with `a` from there.
unsafe fn child_steps(a: &ChildArgs) -> ! {
    let fail = |step: Step, errno: c_int| -> ! {
        a.errno.store(errno, Ordering::Release);
        a.step.store(step as i32, Ordering::Release);
        // SAFETY: _exit(2) ends this child only (it has a thread group of its own).
        unsafe { libc::_exit(127) }
    };
    // SAFETY: system calls with arguments prepared by the parent; see each step.
    unsafe {
        // Every signal is blocked (inherited from the parent thread). A handler of the
        // supervisor must never run here, on shared memory: back to the default action.
        for sig in 1..=MAX_SIGNAL {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            let caught = libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN;
            if caught || sig == libc::SIGPIPE {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &new, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(Step::ProcessGroup, errno());
        }
        if a.cgroup_procs >= 0 && libc::write(a.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            fail(Step::Cgroup, errno());
        }
        if a.parent_death != 0 {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                a.parent_death as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                fail(Step::ParentDeath, errno());
            }
            // The supervisor died before the prctl took effect: act as if the signal came.
            if libc::getppid() != a.parent {
                libc::kill(libc::getpid(), a.parent_death);
                fail(Step::ParentGone, libc::ESRCH);
            }
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            if fd < 0 {
                continue;
            }
            // The source is above 2, so it differs from the target and dup2 clears
            // close-on-exec on the copy.
            while libc::dup2(fd, target as c_int) < 0 {
                let e = errno();
                if e != libc::EINTR {
                    fail(Step::Stdio, e);
                }
            }
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) != 0 {
            fail(Step::Chdir, errno());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // As execvp: go on past directories where the program is missing or not
        // executable; report EACCES if that was seen, else the last error.
        let mut last = libc::ENOENT;
        let mut denied = false;
        for i in 0..a.candidate_count {
            libc::execve(*a.candidates.add(i), a.argv, a.envp);
            last = errno();
            match last {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => fail(Step::Exec, last),
            }
        }
        fail(Step::Exec, if denied { libc::EACCES } else { last })
    }
}

fn errno() -> c_int {
    // SAFETY: reads the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

thread_local! {
    /// The stack children cloned from this thread run on (one at a time: the thread is
    /// suspended until the child has exec'd, after which the stack is free again).
    static STACK: RefCell<Option<ChildStack>> = const { RefCell::new(None) };
}

/// An anonymous mapping with a guard page at its low end.
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf with a valid name.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        let len = CHILD_STACK + page;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of our own mapping.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer (stacks grow down on every Linux target we build for).
    fn top(&mut self) -> *mut c_void {
        // SAFETY: one past the end of our own mapping.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unused once its thread ends.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// Blocks every signal, real-time and C-library-internal ones included, on the calling
/// thread until dropped, when the previous mask is restored.
struct BlockedSignals {
    old: u64,
}

impl BlockedSignals {
    fn all() -> io::Result<BlockedSignals> {
        let all: u64 = !0;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask with the kernel's 8-byte signal set.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const all,
                &raw mut old,
                std::mem::size_of::<u64>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(BlockedSignals { old })
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `all`.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const self.old,
                std::ptr::null_mut::<u64>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments; the descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reaps a child that has exited or is about to (blocking).
pub(crate) fn reap_blocking(pid: libc::pid_t) -> Option<c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Some(status);
        }
        if rc < 0 && errno() == libc::EINTR {
            continue;
        }
        return None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[CString]) -> Vec<String> {
        v.iter().map(|c| c.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn program_with_a_slash_is_taken_as_is() {
        let c = candidates(OsStr::new("./bin/x"), Some(OsStr::new("/a:/b"))).unwrap();
        assert_eq!(strings(&c), ["./bin/x"]);
    }

    #[test]
    fn program_without_a_slash_is_tried_in_each_path_directory() {
        let c = candidates(OsStr::new("x"), Some(OsStr::new("/a:/b/::c"))).unwrap();
        assert_eq!(strings(&c), ["/a/x", "/b/x", "x", "c/x"]);
        let c = candidates(OsStr::new("x"), None).unwrap();
        assert_eq!(strings(&c), ["/bin/x", "/usr/bin/x"]);
        assert!(candidates(OsStr::new(""), None).is_err());
    }

    #[test]
    fn environment_overrides_and_last_setting_wins() {
        let (envp, path) = environment(&[
            (OsStr::new("PATH"), OsStr::new("/first")),
            (OsStr::new("TDL_VFORK_TEST"), OsStr::new("1")),
            (OsStr::new("PATH"), OsStr::new("/second")),
        ])
        .unwrap();
        let envp = strings(&envp);
        assert_eq!(path.as_deref(), Some(OsStr::new("/second")));
        assert_eq!(envp.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(envp.contains(&"PATH=/second".to_owned()));
        assert!(envp.contains(&"TDL_VFORK_TEST=1".to_owned()));
    }

    #[test]
    fn failed_steps_name_themselves_but_exec_errors_stay_plain() {
        let e = Step::Exec.error(libc::ENOENT);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = Step::Chdir.error(libc::ENOENT);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .starts_with("cannot change to the working directory: ")
        );
        for n in 0..10 {
            let step = Step::from(n);
            assert!(step == Step::None || step as i32 == n);
        }
    }
}
