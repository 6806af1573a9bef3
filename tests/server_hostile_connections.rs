//! Hostile connections against a real `tom-ledger serve`: slow, half-open and flooding
//! clients (loopback only, bounded in count and time) are dropped without hurting anyone
//! else, the ledger directory stays byte for byte as it was, and the server's memory stays
//! bounded.

mod cli_common;
mod server_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use cli_common::{Env, snapshot};
use server_common::{Auth, Server, addr, read_to_close, seeded, unharmed};

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
