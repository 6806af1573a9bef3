//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the status page's tests.
//!
//! Every file the browser writes (profile, crash database, home, driver log) lives in the
//! test's temp directory under names that carry the test's marker, so every process of
//! it (chromedriver, each Chromium process, Chromium's crash handler, which leaves the
//! driver's process group) can be found in `/proc` and killed: on [`Browser::close`], on
//! drop after a panic, and by the [`Scope`] watchdog of a hung test.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Longest wait for anything the page should show.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Kills every process whose command line carries the marker, and aborts the test binary
/// when the test runs longer than its limit; on drop (also after a panic) it kills what
/// is left with the marker.
pub struct Scope {
    marker: String,
    disarm: Option<mpsc::Sender<()>>,
}

impl Scope {
    pub fn new(marker: &str, limit: Duration) -> Scope {
        let (tx, rx) = mpsc::channel::<()>();
        let owned = marker.to_string();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: test with marker {owned} still running after {limit:?}");
                kill_marked(&owned);
                std::process::abort();
            }
        });
        Scope {
            marker: marker.to_string(),
            disarm: Some(tx),
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        kill_marked(&self.marker);
        if let Some(tx) = self.disarm.take() {
            let _ = tx.send(());
        }
    }
}

/// Pids of live (non-zombie) processes whose command line contains `marker`.
pub fn marked(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            !zombie
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(marker))
                    .unwrap_or(false)
        })
        .collect()
}

pub fn kill_marked(marker: &str) {
    for pid in marked(marker) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Where a test's screenshot goes: `docs/screenshots/` with `TOM_LEDGER_SCREENSHOTS=1`,
/// else the test's temp directory.
pub fn screenshot_path(scratch: &Path, name: &str) -> PathBuf {
    if std::env::var("TOM_LEDGER_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).expect("create docs/screenshots");
        dir.join(name)
    } else {
        scratch.join(name)
    }
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    marker: String,
    scratch: PathBuf,
    closed: bool,
}

/// A port nobody listens on right now (the driver may still lose it to a race: then it
/// exits and the start is tried again).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Start chromedriver on a free port and wait until it accepts connections.
fn start_driver(scratch: &Path, marker: &str, home: &Path) -> (Child, u16) {
    for _ in 0..3 {
        let port = free_port();
        let log = scratch.join(format!("{marker}-chromedriver.log"));
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver (Debian package chromium-driver)");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (driver, port);
            }
            if driver.try_wait().expect("wait chromedriver").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("chromedriver did not start on any of three ports");
}

impl Browser {
    /// A fresh headless Chromium with its own profile in `scratch`, its window
    /// `width`×`height`.
    pub async fn start(scratch: &Path, marker: &str, width: u32, height: u32) -> Browser {
        let home = scratch.join(format!("{marker}-browser-home"));
        let profile = scratch.join(format!("{marker}-browser-profile"));
        std::fs::create_dir_all(&home).expect("browser home");
        let (driver, port) = start_driver(scratch, marker, &home);
        let chromium =
            which::which("chromium").expect("chromium on PATH (Debian package chromium)");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Required as root.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    "--disable-crash-reporter",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with chromium");
        Browser {
            client,
            driver,
            marker: marker.to_string(),
            scratch: scratch.to_path_buf(),
            closed: false,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Run `script` (a function body) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .expect("script in the page")
    }

    /// Wait until `script` returns something truthy (not null, false, 0 or ""); returns
    /// it. After [`PATIENCE`] the test fails with a screenshot and the page's text.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.js(script).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let shot = self.scratch.join("timed-out.png");
                self.screenshot_to(&shot).await;
                let text = self.js("return document.body.innerText").await;
                panic!(
                    "timed out waiting for {what}; screenshot {}; page text:\n{}",
                    shot.display(),
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn screenshot_to(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// A screenshot named `name` (see [`screenshot_path`]); returns where it went.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let path = screenshot_path(&self.scratch, name);
        self.screenshot_to(&path).await;
        path
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("window size");
    }

    /// End the session (Chromium quits), stop the driver, and wait until no process of
    /// the browser is left.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.stop_driver();
        let deadline = Instant::now() + PATIENCE;
        while !self.own_processes().is_empty() {
            if Instant::now() >= deadline {
                kill_marked(&self.browser_marker());
                panic!("browser processes left behind");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closed = true;
    }

    fn stop_driver(&mut self) {
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
        let _ = self.driver.wait();
    }

    /// What every browser process carries in its command line (profile, home or log
    /// path).
    fn browser_marker(&self) -> String {
        format!("{}-", self.marker)
    }

    fn own_processes(&self) -> Vec<i32> {
        marked(&format!("{}-browser-", self.marker))
            .into_iter()
            .chain(marked(&format!("{}-chromedriver", self.marker)))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            self.stop_driver();
            for pid in self.own_processes() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}
