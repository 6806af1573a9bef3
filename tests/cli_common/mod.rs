//! Running the real `tom-ledger` binary in a temp directory, with a watchdog, and looking
//! at what it left: the ledger directory, processes, files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tom-ledger");

/// How long any single command may take before the test fails instead of hanging.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// A temp directory with a ledger in it, and a marker unique to this test that every
/// worker gets as an argument, so leftovers can be found in `/proc`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub ledger: PathBuf,
    pub marker: String,
}

impl Env {
    pub fn new() -> Env {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = dir.path().join("ledger");
        let marker = format!(
            "tlmark-{}-{}-{:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            rand_u32()
        );
        Env {
            dir,
            ledger,
            marker,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    /// `tom-ledger --ledger DIR ARGS...` in the temp directory, with a clean environment
    /// and the binary's directory first on PATH (for nested calls).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--ledger").arg(&self.ledger).args(args);
        self.prepare(&mut c);
        c
    }

    /// `tom-ledger ARGS...` without `--ledger`.
    pub fn bare(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args);
        self.prepare(&mut c);
        c
    }

    fn prepare(&self, c: &mut Command) {
        for var in [
            "TOM_LEDGER_DIR",
            "TOM_LEDGER_OPERATION",
            "TOM_LEDGER_CALL",
            "TOM_LEDGER_PARTICIPANT",
            "TOM_LEDGER_URL",
            "TOM_LEDGER_ETCD",
            "TOM_LEDGER_ETCD_PREFIX",
            "TOM_LEDGER_TOKEN",
            "TOM_LEDGER_LOG",
            "TOM_LEDGER_LOCK_TIMEOUT",
            "TOM_LEDGER_TRAIL_KEEP",
            "TOM_LEDGER_TRAIL_MAX_BYTES",
            "TOM_LEDGER_LOG_MAX_BYTES",
        ] {
            c.env_remove(var);
        }
        let bin_dir = Path::new(BIN).parent().expect("binary dir");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin_dir.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(paths).expect("PATH"));
        c.current_dir(self.dir.path());
        // Scripts of workers find the test directory as `$D`.
        c.env("D", self.dir.path());
    }

    /// `tom-ledger --ledger DIR ARGS...` with stdout and stderr on a terminal: run through
    /// `script` (util-linux), which gives it a pseudo-terminal and copies what it writes
    /// there to its own stdout. `-e` passes the command's exit status through.
    pub fn terminal_cmd(&self, args: &[&str]) -> Command {
        let mut line = shell_quote(BIN);
        line.push_str(" --ledger ");
        line.push_str(&shell_quote(
            self.ledger.to_str().expect("utf-8 ledger path"),
        ));
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let mut c = Command::new("script");
        c.args(["-qfec", &line, "/dev/null"]);
        self.prepare(&mut c);
        c
    }

    /// Run to the end (bounded by the watchdog).
    pub fn run(&self, args: &[&str]) -> Out {
        run(self.cmd(args))
    }

    /// Processes still running with this test's marker in their command line.
    pub fn leftovers(&self) -> Vec<i32> {
        processes_with(&self.marker)
    }

    /// Wait until no process carries the marker (they may be exiting right now).
    pub fn assert_no_leftovers(&self) {
        wait_until("every worker process to be gone", || {
            self.leftovers().is_empty()
        });
    }

    /// Everything below the ledger directory: path → content.
    pub fn ledger_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(&self.ledger)
    }
}

impl Drop for Env {
    /// Whatever happened, no process of this test outlives it.
    fn drop(&mut self) {
        for pid in self.leftovers() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ (std::process::id() << 7)
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Assert the exit code, showing the output when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit status; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout as JSON lines (panics on anything else).
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    /// The events of one kind, in order.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

/// `text` in single quotes for `sh`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Run a command to its end with the watchdog.
pub fn run(mut cmd: Command) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start tom-ledger");
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, WATCHDOG);
    Out {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Wait for a child; kill it and fail the test when it takes longer than `bound`.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command hung for {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running command whose stdout is read line by line as it comes.
pub struct Live {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Live {
    pub fn start(mut cmd: Command) -> Live {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start tom-ledger");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(reader(child.stderr.take().expect("stderr")));
        Live {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Read stdout until a line satisfies `pred`; fails after the watchdog bound.
    pub fn wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {what} on stdout; saw {:?}", self.seen);
                }
            }
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("send signal");
    }

    /// Wait for the end (bounded) and collect the rest of the output.
    pub fn finish(mut self) -> Out {
        let status = wait_bounded(&mut self.child, WATCHDOG);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut stdout = self.seen.join("\n");
        stdout.push('\n');
        Out {
            status,
            stdout,
            stderr,
        }
    }
}

/// Poll until `check` holds, failing after a generous bound.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids of running (non-zombie) processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Every file below `dir` with its content (empty when `dir` does not exist).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.insert(p.clone(), b"<dir>".to_vec());
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// The id of the only operation in the ledger (live or archived).
pub fn only_operation(env: &Env) -> String {
    let out = env.run(&["ls", "--json"]);
    out.expect_code(0);
    let ops = out.json();
    assert_eq!(ops.len(), 1, "one operation expected: {ops:?}");
    ops[0]["operation"]
        .as_str()
        .expect("operation id")
        .to_string()
}

/// Assert that two snapshots are equal, naming the paths that differ.
pub fn assert_same(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    let mut diff = Vec::new();
    for (p, content) in before {
        match after.get(p) {
            None => diff.push(format!("removed {}", p.display())),
            Some(c) if c != content => diff.push(format!("changed {}", p.display())),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        diff.push(format!("added {}", p.display()));
    }
    assert!(diff.is_empty(), "{what}: {diff:#?}");
}

/// A `[[worker]]` table running `script` with `sh -c`; the script sees the test directory
/// as `$D` and gets the test's marker as `$0`.
pub fn worker(env: &Env, name: &str, script: &str, extra: &str) -> String {
    format!(
        "[[worker]]\nname = \"{name}\"\ncmd = [\"sh\", \"-c\", '''{script}''', \"{}\"]\n{extra}\n",
        env.marker
    )
}

/// Write a plan of these workers (with `D` set for all of them) and return its path.
pub fn plan(env: &Env, workers: &[String]) -> String {
    let mut text = format!(
        "[defaults]\nenv = {{ D = \"{}\" }}\n\n",
        env.dir.path().display()
    );
    for w in workers {
        text.push_str(w);
        text.push('\n');
    }
    env.write("plan.toml", &text)
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// The events of a worker, by name.
pub fn of_worker<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["name"] == name).collect()
}

/// Index of the first event matching `kind` and worker `name`.
pub fn index_of(events: &[Value], kind: &str, name: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == kind && e["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} of {name} in {events:#?}"))
}
