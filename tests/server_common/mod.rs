//! A real `tom-ledger serve` process on a free loopback port in a test's temp directory,
//! and a plain HTTP client for it (requests built by hand, as other clients build them).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli_common::{Env, Live, wait_bounded};

/// Longest a test may keep a server: past it the server is killed and the test binary
/// aborts instead of hanging.
pub const SERVER_WATCHDOG: Duration = Duration::from_secs(300);

/// Longest any single request of a test may take.
pub const REQUEST_BOUND: Duration = Duration::from_secs(30);

/// Whether the server wants a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Token,
    NoAuth,
}

/// A running server; stopped (SIGTERM, bounded wait) when dropped.
pub struct Server {
    live: Option<Live>,
    pub url: String,
    pub token: Option<String>,
    pub pid: i32,
    pub client: reqwest::Client,
    _watchdog: Watchdog,
}

/// Kills the server and aborts the test binary unless dropped in time.
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Watchdog {
    fn arm(pid: i32) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(SERVER_WATCHDOG)
            {
                eprintln!("watchdog: server {pid} still in use after {SERVER_WATCHDOG:?}");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Server {
    /// `tom-ledger --ledger DIR serve --port 0`; the test's marker rides along as the
    /// participant id so a leftover server is found by it.
    pub fn start(env: &Env, auth: Auth) -> Server {
        let mut args = vec![
            "--json",
            "--participant",
            &env.marker,
            "serve",
            "--port",
            "0",
        ];
        if auth == Auth::NoAuth {
            args.push("--no-auth");
        }
        let mut live = Live::start(env.cmd(&args));
        let line = live.wait_for_line("the listening event", |l| l.contains("\"listening\""));
        let event: Value = serde_json::from_str(&line).expect("json event");
        let url = event["url"].as_str().expect("url").to_string();
        let token = match auth {
            Auth::Token => Some(
                std::fs::read_to_string(env.ledger.join("server.token"))
                    .expect("generated token")
                    .trim()
                    .to_string(),
            ),
            Auth::NoAuth => None,
        };
        let pid = live.child.id() as i32;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_BOUND)
            .build()
            .expect("client");
        Server {
            live: Some(live),
            url,
            token,
            pid,
            client,
            _watchdog: Watchdog::arm(pid),
        }
    }

    /// A request with the token (when the server has one).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// POST a JSON body as the original's client does; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        answer(self.request(Method::POST, path).json(&body).send().await).await
    }

    /// The same with a `Participant-Id` header.
    pub async fn post_as(&self, who: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .request(Method::POST, path)
            .header("Participant-Id", who)
            .json(&body);
        answer(r.send().await).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(self.request(Method::GET, path).send().await).await
    }

    /// POST that must succeed; its answer.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{path} {body}: {answer}");
        answer
    }

    /// The server's resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("server status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Stop it (SIGTERM) and wait, bounded.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(mut live) = self.live.take() {
            live.signal(Signal::SIGTERM);
            wait_bounded(&mut live.child, Duration::from_secs(30));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The status and the JSON body of an answer (every answer of the server is JSON).
pub async fn answer(sent: reqwest::Result<reqwest::Response>) -> (StatusCode, Value) {
    let response = sent.expect("request answered");
    let status = response.status();
    let text = response.text().await.expect("body read");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer with status {status} is not json ({e}): {text:?}"));
    (status, value)
}

/// The ledger directory of the test.
pub fn ledger_dir(env: &Env) -> PathBuf {
    env.ledger.clone()
}
