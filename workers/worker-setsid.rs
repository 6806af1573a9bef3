//! `worker-setsid [--exit]`: forks a child that calls `setsid` (leaving the process group
//! and session) and hangs; prints `pid P` and `ready` once the child has done so. With
//! `--exit` the worker exits after `ready`, orphaning the child.
mod common;

use std::io::Read;
use std::os::fd::FromRawFd;

fn main() {
    common::arm_safety_exit();
    let args = common::args();
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a local array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!("pipe failed");
        std::process::exit(70);
    }
    let [read_end, write_end] = fds;
    let pid = common::fork(|| {
        // SAFETY: plain system calls in the forked child.
        unsafe {
            libc::setsid();
            libc::write(write_end, b"s".as_ptr().cast(), 1);
            libc::close(write_end);
        }
        common::hang();
    });
    // SAFETY: we own the write end and close it once; the read end becomes a File.
    unsafe { libc::close(write_end) };
    let mut reader = unsafe { std::fs::File::from_raw_fd(read_end) };
    let mut byte = [0u8; 1];
    let _ = reader.read(&mut byte);
    common::say(&format!("pid {pid}"));
    common::say("ready");
    if common::flag(&args, "--exit") {
        std::process::exit(0);
    }
    common::hang();
}
