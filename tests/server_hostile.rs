//! Hostile input against a real `tom-ledger serve`, native `/v1/` routes and the
//! original's endpoints alike: every bad request gets one `{"error": "..."}` line with
//! the status that says what was wrong, the ledger directory stays byte for byte as it
//! was, and the server goes on answering. Slow, half-open and flooding clients (loopback
//! only, bounded in count and time) are dropped without hurting anyone else.

mod cli_common;
mod server_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cli_common::{Env, assert_same, snapshot};
use server_common::{Auth, Server, answer};
use tom_dist_ledger::ledger::OperationOptions;
use tom_dist_ledger::{Connect, Ledger, ParticipantId};

/// A ledger with something in it to aim at: a library operation whose initiator (this
/// test process) is alive but no longer writes, and an operation of an original client
/// with a running call. Returns (library op, original op, its call).
async fn seeded(server: &Server, env: &Env) -> (String, String, String) {
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
async fn unharmed(server: &Server, ledger: &Path, before: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let (status, health) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK, "after {what}: {health}");
    assert_same(before, &snapshot(ledger), &format!("ledger after {what}"));
}

/// One bad request: its status, and an answer that is one `{"error"}` line.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
}

fn case(what: &'static str, method: Method, path: &str, body: Option<&str>, status: u16) -> Case {
    Case {
        what,
        method,
        path: path.to_string(),
        headers: if body.is_some() {
            vec![("content-type", "application/json".to_string())]
        } else {
            Vec::new()
        },
        body: body.map(|b| b.as_bytes().to_vec()),
        status,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_string()));
        self
    }
}

async fn send(server: &Server, c: &Case, with_token: bool) -> (StatusCode, Value) {
    let url = format!("{}{}", server.url, c.path);
    let mut r = server.client.request(c.method.clone(), url);
    if with_token && let Some(t) = &server.token {
        r = r.bearer_auth(t);
    }
    for (n, v) in &c.headers {
        r = r.header(*n, v);
    }
    if let Some(b) = &c.body {
        r = r.body(b.clone());
    }
    answer(r.send().await).await
}

fn assert_error_line(what: &str, answer: &Value) {
    let message = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error in {answer}"));
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{what}: {message:?}"
    );
    assert_eq!(
        answer.as_object().map(|o| o.len()),
        Some(1),
        "{what}: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_one_line_errors_and_change_nothing() {
    let env = Env::new();
    let server = Server::start(&env, Auth::Token);
    let (lib_op, op, call) = seeded(&server, &env).await;
    // What the native API says of the original client's operation, for the conflicts.
    let read = server
        .request(Method::GET, &format!("/v1/operations/{op}"))
        .send()
        .await
        .expect("read");
    let etag = read.headers()["etag"].to_str().unwrap().to_string();
    let stored = read.text().await.unwrap();
    let revision: u64 = etag.trim_matches('"').parse().unwrap();
    let stale = format!("\"{}\"", revision.saturating_sub(1));
    let before = snapshot(&env.ledger);

    let cases = vec![
        // Malformed JSON and wrong shapes.
        case(
            "truncated json",
            Method::POST,
            "/operation/heartbeat",
            Some("{\"operationId\":"),
            400,
        ),
        case(
            "json array",
            Method::POST,
            "/operation/join",
            Some("[1,2]"),
            400,
        ),
        case(
            "native truncated json",
            Method::POST,
            "/v1/operations",
            Some("{not json"),
            400,
        ),
        case(
            "id as a number",
            Method::POST,
            "/operation/create",
            Some("{\"participantId\":5}"),
            400,
        ),
        case(
            "session as text",
            Method::POST,
            "/call/start",
            Some(&format!(
                "{{\"operationId\":\"{op}\",\"sessionId\":\"one\"}}"
            )),
            400,
        ),
        case(
            "flag as text",
            Method::POST,
            "/operation/abort",
            Some(&format!("{{\"operationId\":\"{op}\",\"value\":\"yes\"}}")),
            400,
        ),
        case(
            "pid out of range",
            Method::POST,
            "/operation/join",
            Some(&format!(
                "{{\"operationId\":\"{op}\",\"participantId\":\"x\",\"participantPid\":1e20}}"
            )),
            400,
        ),
        case(
            "missing participant",
            Method::POST,
            "/operation/join",
            Some(&format!("{{\"operationId\":\"{op}\"}}")),
            400,
        ),
        case(
            "native wrong shape",
            Method::PUT,
            &format!("/v1/operations/{op}"),
            Some("{\"operationId\":5}"),
            400,
        )
        .header("if-match", &etag),
        case(
            "plain text body",
            Method::POST,
            "/operation/abort",
            Some(&format!("{{\"operationId\":\"{op}\"}}")),
            415,
        )
        .header("content-type", "text/plain"),
        // Wrong methods.
        case("get create", Method::GET, "/operation/create", None, 405),
        case(
            "get abort",
            Method::GET,
            &format!("/operation/abort?operationId={op}"),
            None,
            405,
        ),
        case(
            "put call start",
            Method::PUT,
            "/call/start",
            Some("{}"),
            405,
        ),
        case(
            "native delete",
            Method::DELETE,
            &format!("/v1/operations/{op}"),
            None,
            405,
        ),
        // Invalid ids, path traversal among them.
        case(
            "traversal join",
            Method::POST,
            "/operation/join",
            Some("{\"operationId\":\"../../etc/passwd\",\"participantId\":\"x\"}"),
            400,
        ),
        case(
            "traversal participant",
            Method::POST,
            "/operation/create",
            Some("{\"participantId\":\"../evil\"}"),
            400,
        ),
        case(
            "slash in id",
            Method::POST,
            "/operation/heartbeat",
            Some("{\"operationId\":\"a/b\"}"),
            400,
        ),
        case(
            "traversal call",
            Method::POST,
            "/callframe/create",
            Some(&format!("{{\"operationId\":\"{op}\",\"callId\":\"../c\"}}")),
            400,
        ),
        case(
            "traversal header",
            Method::POST,
            "/operation/heartbeat",
            Some(&format!("{{\"operationId\":\"{op}\"}}")),
            400,
        )
        .header("participant-id", "../x"),
        case(
            "traversal query",
            Method::GET,
            "/operation/state?operationId=..%2Fx",
            None,
            400,
        ),
        case(
            "native traversal",
            Method::GET,
            "/v1/operations/..%2F..%2Fetc",
            None,
            400,
        ),
        case(
            "native hidden",
            Method::GET,
            "/v1/operations/.hidden",
            None,
            400,
        ),
        // Unknown operations, calls, paths.
        case(
            "join unknown",
            Method::POST,
            "/operation/join",
            Some("{\"operationId\":\"nope\",\"participantId\":\"x\"}"),
            404,
        ),
        case(
            "beat unknown",
            Method::POST,
            "/operation/heartbeat",
            Some("{\"operationId\":\"nope\"}"),
            404,
        ),
        case(
            "state unknown",
            Method::GET,
            "/operation/state?operationId=nope",
            None,
            404,
        ),
        case(
            "log unknown",
            Method::POST,
            "/operation/log",
            Some("{\"operationId\":\"nope\",\"message\":\"m\"}"),
            404,
        ),
        case(
            "end unknown call",
            Method::POST,
            "/call/end",
            Some(&format!(
                "{{\"operationId\":\"{op}\",\"callId\":\"call_none_1_0000\"}}"
            )),
            404,
        ),
        case(
            "native unknown",
            Method::GET,
            "/v1/operations/nope",
            None,
            404,
        ),
        case(
            "unknown path",
            Method::POST,
            "/operation/nope",
            Some("{}"),
            404,
        ),
        // Conflicts with the operations' state.
        case(
            "join a live holder's id",
            Method::POST,
            "/operation/join",
            Some(&format!(
                "{{\"operationId\":\"{lib_op}\",\"participantId\":\"holder\",\"participantPid\":1}}"
            )),
            409,
        ),
        case(
            "complete with a running call",
            Method::POST,
            "/operation/complete",
            Some(&format!("{{\"operationId\":\"{op}\"}}")),
            409,
        ),
        case(
            "duplicate frame",
            Method::POST,
            "/callframe/create",
            Some(&format!(
                "{{\"operationId\":\"{op}\",\"callId\":\"{call}\",\"participantId\":\"orig\"}}"
            )),
            409,
        ),
        case(
            "unknown session",
            Method::POST,
            "/call/start",
            Some(&format!("{{\"operationId\":\"{op}\",\"sessionId\":99}}")),
            409,
        ),
        case(
            "someone else's call",
            Method::POST,
            "/call/end",
            Some(&format!(
                "{{\"operationId\":\"{op}\",\"callId\":\"{call}\",\"participantId\":\"holder\"}}"
            )),
            409,
        ),
        case(
            "unnamed request to a library operation",
            Method::POST,
            "/operation/leave",
            Some(&format!("{{\"operationId\":\"{lib_op}\"}}")),
            400,
        ),
        case(
            "native create of an existing id",
            Method::POST,
            "/v1/operations",
            Some(&stored),
            409,
        ),
        case(
            "native stale revision",
            Method::PUT,
            &format!("/v1/operations/{op}"),
            Some(&stored),
            412,
        )
        .header("if-match", &stale),
        case(
            "native write without revision",
            Method::PUT,
            &format!("/v1/operations/{op}"),
            Some(&stored),
            428,
        ),
    ];
    for c in &cases {
        let (status, body) = send(&server, c, true).await;
        assert_eq!(status.as_u16(), c.status, "{}: {body}", c.what);
        assert_error_line(c.what, &body);
        unharmed(&server, &env.ledger, &before, c.what).await;
    }
    // Huge bodies: refused on their length, without the server reading them (the
    // client's write may then fail; the answer arrives first).
    let huge = format!(
        "{{\"operationId\":\"{op}\",\"message\":\"{}\"}}",
        "x".repeat(5 << 20)
    );
    for path in ["/operation/log", "/v1/operations"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.token.as_deref().unwrap_or_default(),
            huge.len()
        );
        let got = exchange(&addr(&server), head.into_bytes(), huge.clone().into_bytes()).await;
        assert!(
            got.starts_with("HTTP/1.1 413"),
            "huge body to {path}: {got:.200}"
        );
        let json = got.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {got:.300}"));
        assert_error_line("huge body", &json);
        unharmed(&server, &env.ledger, &before, "a huge body").await;
    }
    // Without the token, or with a wrong one: the same 401 for a real operation and a
    // made-up one.
    let abort = case(
        "abort",
        Method::POST,
        "/operation/abort",
        Some(&format!("{{\"operationId\":\"{op}\"}}")),
        401,
    );
    let made_up = case(
        "abort",
        Method::POST,
        "/operation/abort",
        Some("{\"operationId\":\"nope\"}"),
        401,
    );
    let (s1, b1) = send(&server, &abort, false).await;
    let (s2, b2) = send(&server, &made_up, false).await;
    let wrong = abort.header(
        "authorization",
        "Bearer 0000000000000000000000000000000000000000000000000000000000000000",
    );
    let (s3, b3) = send(&server, &wrong, false).await;
    assert_eq!((s1.as_u16(), s2.as_u16(), s3.as_u16()), (401, 401, 401));
    assert_eq!(b1, b2);
    assert_eq!(b1, b3);
    assert_error_line("no token", &b1);
    unharmed(&server, &env.ledger, &before, "requests without the token").await;
}

/// Read what the server sends until it closes the connection (or the bound passes).
async fn read_to_close(stream: &mut TcpStream, bound: Duration) -> Option<String> {
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
async fn exchange(addr: &str, head: Vec<u8>, body: Vec<u8>) -> String {
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

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_open_clients_time_out_while_others_are_served() {
    let env = Env::new();
    let server = Server::start(&env, Auth::NoAuth);
    let (_, op, _) = seeded(&server, &env).await;
    let before = snapshot(&env.ledger);
    let a = addr(&server);
    let silent = TcpStream::connect(&a).await.unwrap();
    let mut partial = TcpStream::connect(&a).await.unwrap();
    partial
        .write_all(b"POST /operation/abort HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut half_body = TcpStream::connect(&a).await.unwrap();
    let head = format!(
        "POST /operation/abort HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"operationId\":\"{op}\""
    );
    half_body.write_all(head.as_bytes()).await.unwrap();
    let mut half_open = TcpStream::connect(&a).await.unwrap();
    half_open
        .write_all(b"POST /operation/abort HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .unwrap();
    half_open.shutdown().await.unwrap();
    let mut lying = TcpStream::connect(&a).await.unwrap();
    lying
        .write_all(b"POST /operation/log HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{}")
        .await
        .unwrap();

    // Meanwhile everyone else is served.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _) = server.get("/health").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    // A body that claims to be huge is refused at once, on its header.
    let refused = read_to_close(&mut lying, Duration::from_secs(30)).await;
    let refused = refused.expect("the lying client is answered");
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");

    // Every slow client is dropped within the server's header and request time limits.
    let bound = Duration::from_secs(90);
    let mut silent = silent;
    let results = tokio::join!(
        read_to_close(&mut silent, bound),
        read_to_close(&mut partial, bound),
        read_to_close(&mut half_body, bound),
        read_to_close(&mut half_open, bound),
    );
    let (s, p, b, h) = results;
    for (what, got) in [("silent", &s), ("partial headers", &p), ("half open", &h)] {
        let got = got
            .as_ref()
            .unwrap_or_else(|| panic!("{what} client still connected"));
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 4"),
            "{what}: {got}"
        );
    }
    let b = b.expect("the client with half a body is dropped");
    assert!(b.starts_with("HTTP/1.1 408"), "{b}");
    unharmed(&server, &env.ledger, &before, "slow clients").await;
}

/// Bytes of one flood request of kind `n`; each asks for the connection to close.
fn flood_request(n: usize, op: &str, token: &str) -> Vec<u8> {
    match n % 8 {
        0 => (0..512).map(|i| ((i * 7919 + n) % 251) as u8).collect(),
        1 => format!("POST /operation/heartbeat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{{\"operationId\":").into_bytes(),
        2 => format!("GET /nope/{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes(),
        3 => format!("POST /operation/abort HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"operationId\":\"{op}\"}}", op.len() + 18).into_bytes(),
        4 => format!("GET /v1/operations/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n", "b".repeat(300 * 1024)).into_bytes(),
        5 => format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "u".repeat(70 * 1024)).into_bytes(),
        6 => {
            let body = "{\"operationId\":\"../../../x\",\"participantId\":\"x\"}";
            format!("POST /operation/join HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
        }
        _ => b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_requests_is_bounded_in_memory_and_changes_nothing() {
    const CONNECTIONS: usize = 2000;
    const AT_ONCE: usize = 64;
    const RSS_LIMIT_KIB: u64 = 100 * 1024;
    let env = Env::new();
    let server = Server::start(&env, Auth::Token);
    let (_, op, _) = seeded(&server, &env).await;
    let before = snapshot(&env.ledger);
    let token = server.token.clone().unwrap();
    let rss_before = server.rss_kib();
    let a = addr(&server);
    assert!(
        a.starts_with("127.0.0.1:"),
        "the flood stays on loopback: {a}"
    );
    let started = Instant::now();
    let flood = async {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..CONNECTIONS {
            let permit = slots.clone().acquire_owned().await.unwrap();
            let (a, request) = (a.clone(), flood_request(n, &op, &token));
            tasks.spawn(async move {
                let _permit = permit;
                let Ok(mut s) = TcpStream::connect(&a).await else {
                    return 0u16;
                };
                let _ = s.write_all(&request).await;
                let got = read_to_close(&mut s, Duration::from_secs(30))
                    .await
                    .unwrap_or_default();
                got.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
            });
        }
        let mut statuses = BTreeMap::new();
        while let Some(done) = tasks.join_next().await {
            *statuses.entry(done.unwrap_or(0)).or_insert(0usize) += 1;
        }
        statuses
    };
    let statuses = tokio::time::timeout(Duration::from_secs(240), flood)
        .await
        .expect("the flood ends within its bound");
    let rss_after = server.rss_kib();
    eprintln!(
        "flood: {CONNECTIONS} connections in {:?}, statuses {statuses:?}, server RSS {rss_before} KiB before, {rss_after} KiB after",
        started.elapsed()
    );
    assert!(
        rss_after < RSS_LIMIT_KIB,
        "server RSS {rss_after} KiB after the flood"
    );
    // Nothing but refusals, and the health checks among them answered.
    assert!(!statuses.contains_key(&500), "{statuses:?}");
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= CONNECTIONS / 8 / 2,
        "{statuses:?}"
    );
    unharmed(&server, &env.ledger, &before, "the flood").await;
}
