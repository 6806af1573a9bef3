//! Ctrl+Z at a real terminal: `tom-ledger run` on a pseudo-terminal of its own (it leads
//! the session, so it is the foreground job), its progress display on it. The ^Z typed
//! into the terminal stops the run and every worker; SIGCONT (what `fg` sends) resumes
//! them and the run completes.

mod cli_common;

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cli_common::{Env, WATCHDOG, plan, wait_bounded, wait_until, worker};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A new pseudo-terminal: the master side, and the path of the terminal.
fn open_pty() -> (File, String) {
    // SAFETY: plain libc calls; every result is checked; the descriptor is owned once.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = File::from(OwnedFd::from_raw_fd(fd));
        assert_eq!(libc::grantpt(fd), 0, "grantpt");
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(fd, name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
        let path = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        (master, path)
    }
}

fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn ticks(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn ctrl_z_typed_at_the_terminal_stops_the_run_and_fg_resumes_it() {
    let env = Env::new();
    let p = plan(
        &env,
        &[worker(
            &env,
            "t",
            "exec worker-ticker $D/stop --marker $0 > $D/t.ticks",
            "",
        )],
    );
    let (mut master, tty) = open_pty();
    let terminal = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tty)
            .expect("open the terminal")
    };
    let mut cmd = env.cmd(&["run", "--plan", &p]);
    cmd.stdin(Stdio::from(terminal()))
        .stdout(Stdio::from(terminal()))
        .stderr(Stdio::from(terminal()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut run = cmd.spawn().expect("start tom-ledger on the terminal");
    let pid = run.id() as i32;
    // Everything the run draws, read as it comes (a full terminal would block it).
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut reader = master.try_clone().expect("master");
    let drawn = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            drawn.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let ticks_file = env.path("t.ticks");
    wait_until("the worker to tick", || ticks(&ticks_file) >= 3);
    let worker_pid = || {
        env.leftovers()
            .into_iter()
            .find(|&p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("worker-ticker"))
            })
            .expect("the worker process")
    };
    let worker = worker_pid();
    wait_until("the progress display", || {
        String::from_utf8_lossy(&screen.lock().unwrap()).contains("done")
    });

    master.write_all(b"\x1a").expect("type ^Z");
    wait_until("the run and its worker to be stopped", || {
        state(pid) == Some('T') && state(worker) == Some('T')
    });
    let (drawn, ticked) = (screen.lock().unwrap().len(), ticks(&ticks_file));
    // Two ticks of the display and fifty of the worker.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        screen.lock().unwrap().len(),
        drawn,
        "the display ticked while stopped"
    );
    assert_eq!(ticks(&ticks_file), ticked, "the worker ran on");

    killpg(Pid::from_raw(pid), Signal::SIGCONT).expect("fg");
    wait_until("the worker to tick again", || ticks(&ticks_file) > ticked);
    std::fs::write(env.path("stop"), b"").expect("stop file");
    let status = wait_bounded(&mut run, WATCHDOG);
    assert_eq!(
        status.code(),
        Some(0),
        "screen:\n{}",
        String::from_utf8_lossy(&screen.lock().unwrap())
    );
    env.assert_no_leftovers();
}
