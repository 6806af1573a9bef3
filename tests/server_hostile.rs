//! Hostile input against a real `tom-ledger serve`, native `/v1/` routes and the
//! original's endpoints alike: every bad request gets one `{"error": "..."}` line with
//! the status that says what was wrong, the ledger directory stays byte for byte as it
//! was, and the server goes on answering. Slow, half-open and flooding clients are in
//! `server_hostile_connections.rs`.

mod cli_common;
mod server_common;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use cli_common::{Env, snapshot};
use server_common::{Auth, Server, addr, answer, exchange, seeded, unharmed};

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
    // A write that carries log lines (`x-with-lines: main`): out of bounds or malformed,
    // it writes neither the change nor any line, even on the current revision.
    let with_lines = |lines: &[String]| {
        format!(
            "{{\"data\":{stored},\"lines\":{}}}",
            serde_json::to_string(lines).unwrap()
        )
    };
    let too_many = with_lines(&vec!["a line".to_string(); 101]);
    let too_long = with_lines(&["ok".to_string(), "x".repeat(64 * 1024 + 1)]);
    let fine_lines = with_lines(&["a line of a refused write".to_string()]);
    let lines_not_a_list = format!("{{\"data\":{stored},\"lines\":\"one\"}}");
    let lines_extra_field = format!("{{\"data\":{stored},\"lines\":[],\"log\":\"debug\"}}");
    let native_put = format!("/v1/operations/{op}");
    let lines_case = |what, body: &str, status| {
        case(what, Method::PUT, &native_put, Some(body), status)
            .header("if-match", &etag)
            .header("x-with-lines", "main")
    };
    let lines_cases = vec![
        lines_case("101 lines with a write", &too_many, 400),
        lines_case("a line over 64 KiB with a write", &too_long, 400),
        lines_case("lines that are not a list", &lines_not_a_list, 400),
        lines_case("lines with an unknown field", &lines_extra_field, 400),
        lines_case("lines without the operation", "{\"lines\":[\"x\"]}", 400),
        lines_case("lines for an unknown log", &fine_lines, 400).header("x-with-lines", "debug"),
        lines_case("lines of a refused write", &fine_lines, 412).header("if-match", &stale),
    ];
    // A frame change the server applies (`POST .../frames`): malformed, out of bounds or
    // someone else's frame, it writes nothing.
    let epoch = serde_json::from_str::<Value>(&stored).unwrap()["participants"]["orig"]["epoch"]
        .as_u64()
        .expect("orig's epoch");
    let frame_change = |writer: &str, owner: &str, epoch: u64, lines: usize| {
        json!({
            "change": {
                "participant": writer,
                "epoch": epoch,
                "at": "2026-11-27T18:00:00Z",
                "step": {"open": {
                    "participantId": owner,
                    "callId": "call_none_2_0000",
                    "pid": 1,
                    "startTime": "2026-11-27T18:00:00Z"
                }}
            },
            "lines": vec!["a line"; lines]
        })
    };
    let frames_path = format!("/v1/operations/{op}/frames");
    let frame_case =
        |what, body: &str, status| case(what, Method::POST, &frames_path, Some(body), status);
    let mut unknown_field = frame_change("orig", "orig", epoch, 0);
    unknown_field["log"] = json!("debug");
    let mut unknown_step = frame_change("orig", "orig", epoch, 0);
    unknown_step["change"]["step"] = json!({"launch": {}});
    let fine_change = frame_change("orig", "orig", epoch, 1).to_string();
    let frame_cases = vec![
        frame_case("frame change truncated", "{\"change\":", 400),
        frame_case(
            "another participant's frame",
            &frame_change("orig", "holder", epoch, 0).to_string(),
            400,
        ),
        frame_case(
            "101 lines with a frame change",
            &frame_change("orig", "orig", epoch, 101).to_string(),
            400,
        ),
        frame_case(
            "frame change with an unknown field",
            &unknown_field.to_string(),
            400,
        ),
        frame_case(
            "frame change of an unknown step",
            &unknown_step.to_string(),
            400,
        ),
        case(
            "frame change to an unknown operation",
            Method::POST,
            "/v1/operations/nope/frames",
            Some(&fine_change),
            404,
        ),
        case(
            "frame change to a traversal",
            Method::POST,
            "/v1/operations/..%2Fx/frames",
            Some(&fine_change),
            400,
        ),
    ];

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
    for c in cases.iter().chain(&lines_cases).chain(&frame_cases) {
        let (status, body) = send(&server, c, true).await;
        assert_eq!(status.as_u16(), c.status, "{}: {body}", c.what);
        assert_error_line(c.what, &body);
        unharmed(&server, &env.ledger, &before, c.what).await;
    }
    // A frame change the operation refuses (a stale epoch): 409 with what refused it
    // and the operation as it is; nothing written.
    let fenced = frame_case(
        "frame change of a stale epoch",
        &frame_change("orig", "orig", epoch + 7, 1).to_string(),
        409,
    );
    let (status, body) = send(&server, &fenced, true).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["refusal"]["kind"], "fenced", "{body}");
    assert_eq!(body["refusal"]["epoch"], epoch + 7, "{body}");
    assert_eq!(body["current"]["operationId"], op.as_str(), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.contains('\n')),
        "{body}"
    );
    unharmed(&server, &env.ledger, &before, fenced.what).await;
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

/// A request head (request line and headers) larger than the server's limit (64 KiB) is
/// refused with 431 and one error line, whether it comes in one header or many, and
/// changes nothing; a large head within the limit is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_limit_gets_431_and_changes_nothing() {
    let env = Env::new();
    let server = Server::start(&env, Auth::NoAuth);
    let (_, op, _) = seeded(&server, &env).await;
    let before = snapshot(&env.ledger);
    let body = format!("{{\"operationId\":\"{op}\",\"participantId\":\"orig\"}}");
    let head = |extra: &str| {
        format!(
            "POST /operation/abort HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes()
    };
    let one_header = |bytes: usize| format!("x-filler: {}\r\n", "a".repeat(bytes));
    let many_headers = |count: usize| {
        (0..count)
            .map(|i| format!("x-filler-{i}: {}\r\n", "b".repeat(900)))
            .collect::<String>()
    };
    for (what, extra) in [
        ("one 70 KB header", one_header(70_000)),
        ("one 100 KB header", one_header(100_000)),
        ("80 headers of 900 bytes", many_headers(80)),
    ] {
        let answer = exchange(&addr(&server), head(&extra), body.clone().into_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{what}: {answer:.200}");
        let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let error: Value = serde_json::from_str(json.trim())
            .unwrap_or_else(|e| panic!("{what}: not one json line ({e}): {json}"));
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("larger than the limit") && !message.contains('\n'),
            "{what}: {message}"
        );
        unharmed(&server, &env.ledger, &before, what).await;
    }
    // A large head within the limit is an ordinary request.
    let (status, health) = answer(
        server
            .request(Method::GET, "/health")
            .header("x-filler", "c".repeat(40_000))
            .send()
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{health}");
}
