//! A real `tom-ledger serve` process for tests: on a free loopback port, over a ledger
//! directory in its own temp dir, with a token file there. Killed (SIGKILL) and reaped
//! when dropped, even when the test fails; the temp dir goes with it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to print where it listens (loaded CI).
const START_BOUND: Duration = Duration::from_secs(60);

/// The token every test server uses (fixed per server, so a restart keeps it).
pub fn test_token() -> String {
    format!("test-token-{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

pub struct ServerProcess {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    port: u16,
    /// Extra arguments of `serve`; without `--token-file` when `own_token` is false.
    extra: Vec<String>,
    own_token: bool,
}

impl ServerProcess {
    /// Start a server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[], true)
    }

    /// Start a server with extra `serve` arguments; `token_file`: with this test's
    /// token file, else the server generates its token (read back from the ledger
    /// directory) or, with `--no-auth`, has none.
    pub fn start_with(extra: &[&str], with_token_file: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = test_token();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).expect("write token file");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("token file mode");
        let mut server = Self {
            child: None,
            dir,
            url: String::new(),
            token,
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            own_token: with_token_file,
        };
        server.spawn(0);
        if !with_token_file {
            server.token = std::fs::read_to_string(server.ledger_dir().join("server.token"))
                .unwrap_or_default();
        }
        server
    }

    /// The ledger directory served.
    pub fn ledger_dir(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn spawn(&mut self, port: u16) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tom-ledger"));
        command
            .arg("--ledger")
            .arg(self.ledger_dir())
            .args(["serve", "--port", &port.to_string()])
            .args(&self.extra);
        if self.own_token {
            command.arg("--token-file").arg(self.token_file());
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tom-ledger serve");
        let stdout = child.stdout.take().expect("server stdout");
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(START_BOUND)
            .expect("the server prints where it listens");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no url in `{line}`"))
            .to_string();
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url");
        self.url = url;
    }

    /// SIGKILL the server and reap it (no clean exit: `server.json` stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the server and wait for its clean exit; returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > START_BOUND {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the server and start it again on the same port, directory and token.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.spawn(port);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a path exists (without following a symlink).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}
