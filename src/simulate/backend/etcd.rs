//! The etcd backend's own member, for a run given no cluster: one `etcd` on free
//! loopback ports, its data in a directory the runner makes for it (never one that
//! existed), healthy before a scenario starts, stopped and its directory removed at the
//! end; killed with its process group when dropped, and when the runner dies
//! (parent-death signal).
//!
//! The process signalled here is our own child, not reaped yet; the directory removed is
//! the one created here, and only after the member that wrote into it is gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::process::{Signal, StdioMode, Worker, WorkerCommand};

/// How long a member may take to become healthy (a loaded machine).
const START_BOUND: Duration = Duration::from_secs(60);
/// Ports are picked free, then given to etcd: another process may take one in between.
const START_ATTEMPTS: usize = 3;
/// How often `/health` is asked while the member starts.
const HEALTH_POLL: Duration = Duration::from_millis(50);

/// The program run.
const ETCD: &str = "etcd";

/// A running etcd member of the simulator's own.
#[derive(Debug)]
pub struct OwnEtcd {
    worker: Option<Worker>,
    client_url: String,
    dir: Option<PathBuf>,
}

impl OwnEtcd {
    /// Start a member with its data in `dir`, which must not exist yet.
    pub async fn start(dir: &Path) -> Result<OwnEtcd> {
        let program = find_program(ETCD).ok_or_else(|| Error::BackendProgramMissing {
            backend: "etcd".into(),
            program: ETCD.into(),
        })?;
        create_own_dir(dir)?;
        // From here on the directory is ours: removed when this handle goes.
        let mut member = OwnEtcd {
            worker: None,
            client_url: String::new(),
            dir: Some(dir.to_path_buf()),
        };
        let mut last = String::new();
        for attempt in 0..START_ATTEMPTS {
            let (client, peer) = (free_port()?, free_port()?);
            let data = dir.join(format!("data-{attempt}"));
            let log = dir.join(format!("etcd-{attempt}.log"));
            member.client_url = format!("http://127.0.0.1:{client}");
            let worker = spawn(&program, &data, &log, &member.client_url, peer)?;
            member.worker = Some(worker);
            match member.wait_healthy().await {
                Ok(()) => return Ok(member),
                Err(why) => {
                    member.kill().await;
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail = tail.lines().last().unwrap_or_default().to_string();
                    last = format!("{why} {tail}");
                }
            }
        }
        member.stop().await;
        Err(Error::invalid(
            "the simulator's etcd member",
            format!("did not start: {}", last.trim()),
        ))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// Wait until `/health` answers `true`; early when the member exited.
    async fn wait_healthy(&mut self) -> std::result::Result<(), String> {
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Some(worker) = self.worker.as_mut()
                && let Ok(Some(status)) = worker.try_wait()
            {
                return Err(format!("it exited ({status})"));
            }
            if healthy(&self.client_url).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not healthy within {START_BOUND:?}"));
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    async fn kill(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            let _ = worker.kill().await;
        }
    }

    /// Stop the member (SIGKILL: its data is scratch) and remove its directory.
    pub async fn stop(&mut self) {
        self.kill().await;
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        // The worker's own drop SIGKILLs its group; the directory goes once it is dead.
        if let Some(mut worker) = self.worker.take() {
            // Not reaped yet: the pid is still its own.
            let running = matches!(worker.try_wait(), Ok(None));
            let pid = worker.pid();
            drop(worker);
            if running {
                super::wait_dead(pid, Duration::from_secs(5));
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn spawn(program: &Path, data: &Path, log: &Path, client_url: &str, peer: u16) -> Result<Worker> {
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = log.display().to_string();
    WorkerCommand::new(program)
        .args(["--name", "sim"])
        .arg("--data-dir")
        .arg(data)
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("sim={peer_url}")])
        .args(["--initial-cluster-state", "new"])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(["--log-level", "warn", "--logger", "zap"])
        .args(["--log-outputs", &log])
        .stdin(StdioMode::Null)
        .stdout(StdioMode::Null)
        .stderr(StdioMode::Null)
        .parent_death_signal(Some(Signal::SIGKILL))
        .spawn()
}

/// Whether `GET /health` answers `"health":"true"`.
async fn healthy(client_url: &str) -> bool {
    let addr = client_url.trim_start_matches("http://");
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        Some(answer.contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ask).await,
        Ok(Some(true))
    )
}

/// A loopback port free just now.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("bind", Path::new("127.0.0.1:0"), e))
}

/// `name` in `PATH`, as an executable file.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Create `dir` (0700); refused when anything is there already.
fn create_own_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create", dir, e))
}
