//! Real etcd members for tests: each on free loopback ports, with its data in a temp
//! directory. A member is SIGKILLed and waited for when its handle is dropped (also when
//! the test panics), and dies with the test process (parent-death signal), so no etcd
//! outlives a test and no data directory is left. Tests never touch a system etcd on
//! 2379/2380.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a member (or cluster) may take to become healthy on a loaded machine.
const START_BOUND: Duration = Duration::from_secs(60);

/// A free loopback port for etcd to take, chosen below the kernel's ephemeral range
/// (32768 and up): a port that a `bind(:0)` elsewhere (servers of other tests) could be
/// handed between our check and etcd's bind is never chosen. Random within 20000..32000
/// and checked free by binding it; never the same port twice in one test process.
fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let state = RandomState::new();
    for attempt in 0u32..10_000 {
        let port = 20_000 + (state.hash_one((attempt, std::process::id())) % 12_000) as u16;
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed = handed.get_or_insert_with(HashSet::new);
        if handed.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed.insert(port);
        return port;
    }
    panic!("no free loopback port in 20000..32000");
}

/// One etcd member process.
pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    cluster_line: String,
}

impl Member {
    fn command(&self, state: &str) -> Command {
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.cluster_line])
            .args(["--initial-cluster-token", "tom-ledger-test"])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--snapshot-count", "10000"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&self.log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        // SAFETY: prctl is async-signal-safe; the member dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "member {} already runs", self.name);
        let child = self
            .command("new")
            .spawn()
            .expect("start etcd (is etcd-server installed? scripts/test-all installs it)");
        self.child = Some(child);
    }

    /// The member's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILL the member and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start a killed member again on its data directory.
    pub fn restart(&mut self) {
        self.start();
    }

    /// Whether `/health` answers `true`.
    pub fn healthy(&self) -> bool {
        let addr = self.client_url.trim_start_matches("http://");
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// `(member id, leader id)` as this member reports them (the JSON gateway's
    /// maintenance status); `None` while it does not answer.
    pub fn status(&self) -> Option<(String, String)> {
        let body = self.post("/v3/maintenance/status", "{}")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let me = v["header"]["member_id"].as_str()?.to_string();
        let leader = v["leader"].as_str()?.to_string();
        Some((me, leader))
    }

    fn post(&self, path: &str, body: &str) -> Option<String> {
        let addr = self.client_url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let (_, body) = answer.split_once("\r\n\r\n")?;
        Some(body.to_string())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of real etcd members, removed with its data when dropped.
pub struct Etcd {
    pub members: Vec<Member>,
    /// Holds every data directory and log; removed last.
    dir: tempfile::TempDir,
}

impl Etcd {
    /// One member.
    pub fn single() -> Etcd {
        Etcd::cluster(1)
    }

    /// `n` members, started together and healthy before this returns.
    pub fn cluster(n: usize) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster_line = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
                cluster_line: cluster_line.clone(),
            })
            .collect();
        let mut etcd = Etcd { members, dir };
        for m in &mut etcd.members {
            m.start();
        }
        etcd.wait_healthy();
        etcd
    }

    /// Wait until every running member is healthy; panics with their logs after the
    /// bound.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + START_BOUND;
        loop {
            let running: Vec<&Member> = self.members.iter().filter(|m| m.child.is_some()).collect();
            if running.iter().all(|m| m.healthy()) {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = running
                    .iter()
                    .map(|m| format!("{}:\n{}", m.name, m.log_text()))
                    .collect();
                panic!("etcd did not become healthy:\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the member that leads (all running members agree on it); waits for
    /// an election to settle.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + START_BOUND;
        loop {
            let statuses: Vec<(usize, String, String)> = self
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.child.is_some())
                .filter_map(|(i, m)| m.status().map(|(me, leader)| (i, me, leader)))
                .collect();
            if let Some((_, _, leader)) = statuses.first()
                && leader != "0"
                && statuses.iter().all(|(_, _, l)| l == leader)
                && let Some((i, _, _)) = statuses.iter().find(|(_, me, _)| me == leader)
            {
                return *i;
            }
            assert!(Instant::now() < deadline, "no etcd leader: {statuses:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The endpoints as `TOM_LEDGER_ETCD` / `--etcd` take them.
    pub fn endpoint_list(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// A key prefix of its own for each ledger in a test, so ledgers sharing a member never
/// see each other.
pub fn unique_prefix(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("/test-{}-{name}-{n}/", std::process::id())
}
