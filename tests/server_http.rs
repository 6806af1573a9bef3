//! `tom-ledger serve` as an HTTP service, driven with a plain HTTP client: the token,
//! the error answers, the store left unchanged by refused requests, slow clients,
//! `server.json` and discovery.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::server::ServerProcess;
use reqwest::StatusCode;
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{Connect, Discovery, Ledger, OperationOptions};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An operation created through the server, and the ledger that created it.
async fn with_operation(server: &ServerProcess) -> (Ledger, tom_dist_ledger::Operation) {
    let ledger = Ledger::connect(
        Connect::remote(&server.url)
            .token(&server.token)
            .participant(ParticipantId::parse("cli").unwrap())
            .heartbeat_interval(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    (ledger, op)
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_every_path_gets_the_same_401() {
    let server = ServerProcess::start();
    let (ledger, op) = with_operation(&server).await;
    let client = http();
    let existing = format!("{}/v1/operations/{}", server.url, op.operation_id());
    let missing = format!("{}/v1/operations/no-such-op", server.url);
    let wrong = "x".repeat(server.token.len());
    let mut answers = Vec::new();
    for url in [&existing, &missing, &format!("{}/nowhere", server.url)] {
        answers.push(answer(client.get(url)).await);
        answers.push(answer(client.get(url).bearer_auth(&wrong)).await);
        answers.push(answer(client.delete(url).bearer_auth(&wrong)).await);
    }
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, r#"{"error":"unauthorized"}"#);
    }
    // With the token, the same paths answer.
    let (status, _) = answer(client.get(&existing).bearer_auth(&server.token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = answer(client.get(&missing).bearer_auth(&server.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Discovery's status needs no token and names no operation.
    let (status, body) = answer(client.get(format!("{}/status", server.url))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""service":"tom_dist_ledger""#), "{body}");
    assert!(!body.contains(op.operation_id().as_str()), "{body}");
    op.complete().await.unwrap();
    ledger.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_token_is_private_to_its_user() {
    let server = ServerProcess::start_with(&[], false);
    let path = server.ledger_dir().join("server.token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");
    assert_eq!(server.token.len(), 64);
    let client = http();
    let url = format!("{}/v1/operations", server.url);
    let (status, _) = answer(client.get(&url).bearer_auth(&server.token)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = answer(client.get(&url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_is_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tom-ledger"))
        .arg("--ledger")
        .arg(dir.path().join("ledger"))
        .args(["serve", "--bind", "0.0.0.0", "--port", "0", "--no-auth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "tom-ledger: error: --no-auth with bind address `0.0.0.0`: a server without a token may only listen on a loopback address"
    );
    assert!(out.stdout.is_empty());
    // On loopback it serves without a token, and says so.
    let open = ServerProcess::start_with(&["--no-auth"], false);
    let (status, _) = answer(http().get(format!("{}/v1/operations", open.url))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!open.ledger_dir().join("server.token").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_get_one_json_line_and_change_nothing() {
    let server = ServerProcess::start();
    let (ledger, op) = with_operation(&server).await;
    let id = op.operation_id().clone();
    let store = ledger.store().clone();
    // The creator's first beat (at once) is copied into the document within seconds;
    // its next is an hour away, so nothing but these requests could change it now.
    common::crash::wait_for("the first beat in the document", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.read(&id).await.unwrap().seq >= 1 }
    })
    .await;
    let before = store.read_versioned(&id).await.unwrap();
    let client = http();
    let at = |path: &str| format!("{}{path}", server.url);
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&server.token);
    let body = serde_json::to_string(&before.data).unwrap();
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            auth(client.get(at("/v1/operations/..%2Fetc"))),
            StatusCode::BAD_REQUEST,
            "invalid operation id",
        ),
        (
            auth(client.get(at("/v1/operations/unknown-op"))),
            StatusCode::NOT_FOUND,
            "operation `unknown-op` not found",
        ),
        (
            auth(client.delete(at(&format!("/v1/operations/{id}")))),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
        (
            auth(
                client
                    .put(at(&format!("/v1/operations/{id}")))
                    .body(body.clone()),
            ),
            StatusCode::PRECONDITION_REQUIRED,
            "If-Match",
        ),
        (
            auth(client.put(at(&format!("/v1/operations/{id}"))))
                .header("if-match", "\"99\"")
                .body(body.clone()),
            StatusCode::PRECONDITION_FAILED,
            "changed meanwhile",
        ),
        (
            auth(client.put(at(&format!("/v1/operations/{id}"))))
                .header("if-match", "\"1\"")
                .body("{\"operationId\": 7"),
            StatusCode::BAD_REQUEST,
            "invalid json body",
        ),
        (
            auth(client.post(at("/v1/operations"))).body(body.clone()),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            auth(client.get(at(&format!("/v1/operations/{id}/log/other")))),
            StatusCode::BAD_REQUEST,
            "log `other`",
        ),
        (
            auth(client.get(at("/v1/nothing-here"))),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
    ];
    for (request, status, message) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{message}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(kind, "application/json", "{message}");
        let text = response.text().await.unwrap();
        assert!(!text.contains('\n'), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let error = parsed["error"].as_str().unwrap();
        assert!(error.contains(message), "{status}: {error}");
    }
    // A body announced too large is refused before it is read (a raw request: an
    // HTTP client would still be writing the body when the answer comes).
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/operations/{id}/log/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.token,
        5 << 20
    );
    raw.write_all(head.as_bytes()).unwrap();
    let mut answer_text = String::new();
    let _ = raw.read_to_string(&mut answer_text);
    assert!(answer_text.starts_with("HTTP/1.1 413"), "{answer_text}");
    assert!(
        answer_text.ends_with(r#"{"error":"request body too large"}"#),
        "{answer_text}"
    );
    let after = store.read_versioned(&id).await.unwrap();
    assert_eq!(after, before, "refused requests changed the operation");
    op.complete().await.unwrap();
    ledger.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_is_dropped() {
    let server = ServerProcess::start();
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /v1/operations HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let since = Instant::now();
    // Meanwhile others are served.
    let (status, _) = answer(http().get(format!("{}/status", server.url))).await;
    assert_eq!(status, StatusCode::OK);
    let reader = std::thread::spawn(move || {
        slow.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        rest
    });
    let rest = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let waited = since.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(waited < Duration::from_secs(40), "dropped after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_json_leads_to_a_live_server_only() {
    let mut server = ServerProcess::start();
    let file = server.ledger_dir().join("server.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["url"], server.url.as_str());
    assert_eq!(written["pid"], server.pid());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let discovery = Discovery {
        ledger_dir: Some(server.ledger_dir()),
        ..Discovery::default()
    };
    let found = tom_dist_ledger::ledger::discover(&discovery).await.unwrap();
    assert_eq!(found.url, server.url);
    // The token beside the ledger is the server's only when it generated it there.
    assert_eq!(found.token, None);
    let ledger = Ledger::connect(
        Connect::discover_with(discovery.clone())
            .token(&server.token)
            .participant(ParticipantId::parse("cli").unwrap()),
    )
    .await
    .unwrap();
    assert!(ledger.list_operations().await.unwrap().is_empty());
    ledger.dispose().await;
    // Killed: the file stays behind, naming a dead process, and is ignored.
    let stale = server.url.clone();
    server.kill();
    assert!(file.exists());
    match tom_dist_ledger::ledger::discover(&discovery).await {
        Ok(found) => assert_ne!(found.url, stale, "a dead server's file was followed"),
        Err(e) => assert!(e.to_string().contains("no live server.json"), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_exit_removes_server_json_and_discovery_finds_the_generated_token() {
    let mut server = ServerProcess::start_with(&[], false);
    let discovery = Discovery {
        ledger_dir: Some(server.ledger_dir()),
        ..Discovery::default()
    };
    let found = tom_dist_ledger::ledger::discover(&discovery).await.unwrap();
    assert_eq!(found.url, server.url);
    assert_eq!(found.token.as_deref(), Some(server.token.as_str()));
    let status = server.terminate().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(!server.ledger_dir().join("server.json").exists());
}

/// Asked to, discovery scans given hosts in parallel: it finds the server among
/// addresses where nothing answers, and a scan of a whole subnet where nothing answers
/// ends within its total deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_finds_the_server_and_ends_within_its_deadline() {
    let server = ServerProcess::start();
    let hostport = server.url.trim_start_matches("http://").to_string();
    // Ports where nothing listens: the server's port on other loopback addresses.
    let port = hostport.rsplit(':').next().unwrap().to_string();
    let scan = vec![
        format!("127.0.0.2:{port}"),
        format!("127.0.0.3:{port}"),
        hostport.clone(),
    ];
    let found = tom_dist_ledger::ledger::discover(&Discovery {
        scan,
        ..Discovery::default()
    })
    .await
    .unwrap();
    // 127.0.0.1:19880 comes before any scan; it may be another server on this machine.
    assert!(
        found.url == server.url || found.url == "http://127.0.0.1:19880",
        "{found:?}"
    );
    let deadline = Duration::from_secs(1);
    let since = Instant::now();
    let nothing = tom_dist_ledger::ledger::discover(&Discovery {
        scan: vec!["192.0.2.0/24".into()],
        probe_timeout: Duration::from_millis(300),
        scan_deadline: deadline,
        concurrency: 16,
        ..Discovery::default()
    })
    .await;
    let took = since.elapsed();
    if let Ok(found) = nothing {
        // Only 127.0.0.1:19880 can answer here (TEST-NET-1 is not routed).
        assert_eq!(found.url, "http://127.0.0.1:19880");
    }
    assert!(
        took < deadline + Duration::from_secs(3),
        "the scan took {took:?}"
    );
}
