//! A real `tom-ledger serve` process on a free loopback port in a test's temp directory,
//! and a plain HTTP client for it (requests built by hand, as other clients build them).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli_common::{Env, Live, assert_same, snapshot, wait_bounded};
use tom_dist_ledger::ledger::OperationOptions;
use tom_dist_ledger::{Connect, Ledger, ParticipantId};

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

/// A ledger with something in it to aim at: a library operation whose initiator (this
/// test process) is alive but no longer writes, and an operation of an original client
/// with a running call. Returns (library op, original op, its call).
pub async fn seeded(server: &Server, env: &Env) -> (String, String, String) {
    let lib = Ledger::connect(
        Connect::local(&env.ledger).participant(ParticipantId::parse("holder").unwrap()),
    )
    .await
    .expect("connect");
    let op = lib
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let library_op = op.operation_id().to_string();
    // No more heartbeats: nothing writes into the directory from here on.
    lib.dispose().await;
    let created = server
        .ok("/operation/create", json!({"participantId": "orig"}))
        .await;
    let original_op = created["operationId"].as_str().unwrap().to_string();
    let call = server
        .ok(
            "/call/start",
            json!({"operationId": original_op, "sessionId": 1}),
        )
        .await;
    let call = call["callId"].as_str().unwrap().to_string();
    (library_op, original_op, call)
}

/// The server still answers, and the ledger is as it was.
pub async fn unharmed(
    server: &Server,
    ledger: &Path,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    let (status, health) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK, "after {what}: {health}");
    assert_same(before, &snapshot(ledger), &format!("ledger after {what}"));
}

/// Read what the server sends until it closes the connection (or the bound passes).
pub async fn read_to_close(stream: &mut TcpStream, bound: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Send `head` and then `body` (in the background: a server that refuses early may close
/// before it is all written), and read the answer until the server closes.
pub async fn exchange(addr: &str, head: Vec<u8>, body: Vec<u8>) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        if write.write_all(&head).await.is_ok() {
            let _ = write.write_all(&body).await;
        }
        write
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(_) => break,
            Err(_) => panic!("no answer within the bound"),
        }
        // One whole answer (headers and its announced body) is enough.
        let text = String::from_utf8_lossy(&got);
        if let Some((head, rest)) = text.split_once("\r\n\r\n")
            && let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
            && rest.len() >= len
        {
            break;
        }
    }
    writer.abort();
    String::from_utf8_lossy(&got).into_owned()
}

pub fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}
