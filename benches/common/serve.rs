//! What the remote benchmarks share: a `tom-ledger serve` on a free port, and settings
//! read from the environment.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const SERVE: &str = env!("CARGO_BIN_EXE_tom-ledger");

/// A setting from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds since the epoch (0 if the clock is before it).
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A `tom-ledger serve` over `{dir}/served` on a free port, with a fresh token, killed
/// when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub token: String,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        let token = format!("bench-token-{:x}", now_nanos());
        let token_file = dir.join("token");
        std::fs::write(&token_file, &token).expect("token file");
        let mut child = Command::new(SERVE)
            .arg("--ledger")
            .arg(dir.join("served"))
            .args(["serve", "--port", "0", "--token-file"])
            .arg(&token_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("serve prints its url");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("url")
            .to_string();
        Server { child, url, token }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
