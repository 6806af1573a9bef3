//! What the vfork spawn prepares before the clone, in the parent: C strings for argv and
//! the environment, the candidate paths of the program, and descriptors kept away from
//! the standard stream numbers. The child only uses what these return.

use std::ffi::{CString, OsStr, OsString, c_char, c_int};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

pub(super) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

pub(super) fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The worker's environment as `NAME=value` strings (the supervisor's, with the
/// command's variables on top), and its `PATH`.
pub(super) fn environment(overrides: &[(&OsStr, &OsStr)]) -> io::Result<(Vec<CString>, Option<OsString>)> {
    let entry = |k: &OsStr, v: &OsStr| {
        let mut s = Vec::with_capacity(k.len() + v.len() + 1);
        s.extend_from_slice(k.as_bytes());
        s.push(b'=');
        s.extend_from_slice(v.as_bytes());
        cstring(&s)
    };
    let overridden = |k: &OsStr| overrides.iter().any(|(o, _)| *o == k);
    let mut path = None;
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if overridden(&k) {
            continue;
        }
        if k == "PATH" {
            path = Some(v.clone());
        }
        envp.push(entry(&k, &v)?);
    }
    for (i, (k, v)) in overrides.iter().enumerate() {
        // The last setting of a name wins.
        if overrides[i + 1..].iter().any(|(later, _)| later == k) {
            continue;
        }
        if *k == "PATH" {
            path = Some(v.to_os_string());
        }
        envp.push(entry(k, v)?);
    }
    Ok((envp, path))
}

/// The paths to try `execve` with: the program itself if it has a slash, else the program
/// in each directory of `path` (empty entries meaning the working directory).
pub(super) fn candidates(program: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    let program = program.as_bytes();
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains(&b'/') {
        return Ok(vec![cstring(program)?]);
    }
    let path = path.map_or(&b"/bin:/usr/bin"[..], OsStr::as_bytes);
    path.split(|b| *b == b':')
        .map(|dir| {
            if dir.is_empty() {
                return cstring(program);
            }
            let mut full = Vec::with_capacity(dir.len() + program.len() + 1);
            full.extend_from_slice(dir);
            if !dir.ends_with(b"/") {
                full.push(b'/');
            }
            full.extend_from_slice(program);
            cstring(&full)
        })
        .collect()
}

/// Moves a descriptor the child will `dup2` from above 0–2, so that no `dup2` of one
/// stream overwrites the source of another.
fn lifted(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > libc::STDERR_FILENO {
        return Ok(fd);
    }
    above_stdio(fd.as_raw_fd())
}

/// A close-on-exec copy of `fd` numbered 3 or above.
pub(super) fn above_stdio(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new descriptor that we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

pub(super) fn open_dev_null() -> io::Result<OwnedFd> {
    // SAFETY: open(2) of a static path; the descriptor is ours.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    lifted(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec pipe: (read end, write end).
pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 fills the two descriptors, which we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((lifted(read)?, lifted(write)?))
}

