//! The status page's HTTP side, without a browser: the page and its assets are public and
//! carry no data, every `/page/api/` route needs the token, the views say what the ledger
//! records (liveness, ages by the server's clock), the abort sets the flag only on a
//! running operation, and the list's event stream tells of operations appearing,
//! changing and leaving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tom_dist_ledger::clock::ManualClock;
use tom_dist_ledger::model::{LedgerData, Participant, ParticipantState};
use tom_dist_ledger::server::{self, Auth, RunningServer, ServeOptions};
use tom_dist_ledger::store::{LogCursor, LogKind, MemoryStore, Store};
use tom_dist_ledger::{OperationId, OperationState, ParticipantId};

const TOKEN: &str = "page-test-token-0123456789";
const BOUND: Duration = Duration::from_secs(20);

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

fn op(id: &str) -> OperationId {
    OperationId::parse(id).expect("operation id")
}

fn participant(heartbeat: &str, state: ParticipantState) -> Participant {
    Participant {
        pid: 4242,
        start_ticks: None,
        host: "host-a".into(),
        boot_id: None,
        pid_namespace: None,
        uid: None,
        epoch: 1,
        last_heartbeat: at(heartbeat),
        joined_at: at("2026-01-01T00:00:00Z"),
        state,
        spawned_by: None,
        paused_at: None,
    }
}

/// A running operation with an alive initiator, a stale peer and a crashed one; the
/// server's clock at 00:01:00.
fn operation(id: &str) -> LedgerData {
    let mut data = LedgerData::new(
        op(id),
        ParticipantId::parse("run-1").expect("id"),
        at("2026-01-01T00:00:00Z"),
    );
    for (name, beat, state) in [
        ("run-1", "2026-01-01T00:00:58Z", ParticipantState::Active),
        ("exec-2", "2026-01-01T00:00:10Z", ParticipantState::Active),
        ("exec-3", "2026-01-01T00:00:20Z", ParticipantState::Crashed),
    ] {
        data.participants.insert(
            ParticipantId::parse(name).expect("id"),
            participant(beat, state),
        );
    }
    data
}

async fn start(store: Arc<MemoryStore>) -> RunningServer {
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut options = ServeOptions::new(bind, Auth::Token(Arc::from(TOKEN)));
    options.clock = ManualClock::new(at("2026-01-01T00:01:00Z"));
    options.ping_interval = Duration::from_millis(200);
    server::start(store, options).await.expect("server")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(BOUND)
        .build()
        .expect("http client")
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.expect("request")
}

async fn post(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().post(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn the_page_is_public_and_data_free_and_its_api_needs_the_token() {
    let store = Arc::new(MemoryStore::new());
    store.create(&operation("op-public")).await.expect("create");
    let server = start(store).await;
    let base = server.url();

    let page = get(&format!("{base}/"), None).await;
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    let html = page.text().await.expect("html");
    assert!(html.contains("/page/app.js") && !html.contains("op-public"));
    for asset in ["/page/app.js", "/page/style.css"] {
        assert_eq!(get(&format!("{base}{asset}"), None).await.status(), 200);
    }

    for path in [
        "/page/api/operations",
        "/page/api/operations/op-public",
        "/page/api/events",
    ] {
        for token in [None, Some("page-test-token-0123456780")] {
            let answer = get(&format!("{base}{path}"), token).await;
            assert_eq!(answer.status().as_u16(), 401, "{path} with {token:?}");
        }
    }
    let listed: Value = get(&format!("{base}/page/api/operations"), Some(TOKEN))
        .await
        .json()
        .await
        .expect("list json");
    let row = &listed["operations"][0];
    assert_eq!(row["operation"], "op-public");
    assert_eq!(row["state"], "running");
    assert_eq!(row["initiator"], "run-1");
    assert_eq!(row["age_ms"], 60_000, "age by the server's clock");
    server.shutdown().await;
}

#[tokio::test]
async fn one_operation_shows_liveness_as_the_ledger_records_it() {
    let store = Arc::new(MemoryStore::new());
    let mut data = operation("op-view");
    data.temp_resources
        .push(tom_dist_ledger::model::TempResource {
            path: "/tmp/op-view-scratch".into(),
            owner: 4242,
            registered_at: at("2026-01-01T00:00:30Z"),
            owner_id: Some(ParticipantId::parse("run-1").expect("id")),
        });
    store.create(&data).await.expect("create");
    let line = "2026-01-01T00:00:01.000Z [INFO] CALL_SPAWNED callId=c1 participant=run-1";
    store
        .append_log(&op("op-view"), LogKind::Main, line)
        .await
        .expect("log");
    let server = start(store).await;
    let view: Value = get(
        &format!("{}/page/api/operations/op-view", server.url()),
        Some(TOKEN),
    )
    .await
    .json()
    .await
    .expect("view json");
    let liveness = |id: &str| {
        view["participants"]
            .as_array()
            .expect("participants")
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| (p["liveness"].clone(), p["heartbeat_age_ms"].clone()))
            .expect("participant")
    };
    assert_eq!(liveness("run-1"), ("alive".into(), 2_000.into()));
    assert_eq!(liveness("exec-2"), ("stale".into(), 50_000.into()));
    assert_eq!(liveness("exec-3").0, "crashed");
    assert_eq!(view["temps"][0]["path"], "/tmp/op-view-scratch");
    assert_eq!(view["temps"][0]["age_ms"], 30_000);
    assert_eq!(view["calls"][0]["outcome"], "running");
    assert_eq!(view["call_counts"]["running"], 1);
    assert_eq!(view["timeline"]["spans"][0]["start_ms"], 1_000);
    assert_eq!(view["log_tail"][0], line);
    let missing = get(
        &format!("{}/page/api/operations/op-missing", server.url()),
        Some(TOKEN),
    )
    .await;
    assert_eq!(missing.status().as_u16(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn the_abort_sets_the_flag_of_a_running_operation_only() {
    let store = Arc::new(MemoryStore::new());
    store.create(&operation("op-run")).await.expect("create");
    let mut done = operation("op-done");
    done.operation_state = OperationState::Completed;
    store.create(&done).await.expect("create");
    let server = start(store.clone()).await;
    let base = server.url();

    let refused = post(&format!("{base}/page/api/operations/op-run/abort"), None).await;
    assert_eq!(refused.status().as_u16(), 401);
    assert!(!store.read(&op("op-run")).await.expect("read").aborted);

    let ok = post(
        &format!("{base}/page/api/operations/op-run/abort"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(ok.status().as_u16(), 200);
    assert!(store.read(&op("op-run")).await.expect("read").aborted);
    let (log, _) = store
        .read_log(&op("op-run"), LogKind::Main, LogCursor::START)
        .await
        .expect("log");
    assert!(log.contains("ABORT_REQUESTED by=status-page"), "{log}");

    let ended = post(
        &format!("{base}/page/api/operations/op-done/abort"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(ended.status().as_u16(), 409);
    let message: Value = ended.json().await.expect("error json");
    assert!(
        message["error"]
            .as_str()
            .is_some_and(|e| e.contains("op-done")),
        "{message}"
    );
    assert!(!store.read(&op("op-done")).await.expect("read").aborted);

    for (path, status) in [("op-nowhere", 404), ("bad%20id", 400), ("..%2Fescape", 400)] {
        let answer = post(
            &format!("{base}/page/api/operations/{path}/abort"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(answer.status().as_u16(), status, "{path}");
    }
    server.shutdown().await;
}

/// Reads JSON lines of a streaming answer.
struct Lines {
    answer: reqwest::Response,
    buffered: String,
}

impl Lines {
    /// The next line that is not a ping, within the bound.
    async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            if let Some(end) = self.buffered.find('\n') {
                let line: String = self.buffered.drain(..=end).collect();
                let v: Value = serde_json::from_str(line.trim()).expect("json line");
                if v["event"] != "ping" {
                    return v;
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.answer.chunk())
                .await
                .expect("a line in time")
                .expect("stream")
                .expect("stream open");
            self.buffered
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

#[tokio::test]
async fn the_list_stream_tells_of_operations_appearing_changing_and_leaving() {
    let store = Arc::new(MemoryStore::new());
    let server = start(store.clone()).await;
    let answer = get(&format!("{}/page/api/events", server.url()), Some(TOKEN)).await;
    assert_eq!(answer.status().as_u16(), 200);
    let mut lines = Lines {
        answer,
        buffered: String::new(),
    };
    assert_eq!(lines.next().await["event"], "hello");

    store.create(&operation("op-new")).await.expect("create");
    let appeared = lines.next().await;
    assert_eq!(
        (&appeared["event"], &appeared["operation"]),
        (&"changed".into(), &"op-new".into())
    );

    store
        .modify(&op("op-new"), &mut |d: &mut LedgerData| {
            d.description = Some("changed".into());
            Ok(())
        })
        .await
        .expect("modify");
    let changed = lines.next().await;
    assert_eq!(changed["operation"], "op-new");

    store
        .modify(&op("op-new"), &mut |d: &mut LedgerData| {
            d.operation_state = OperationState::Completed;
            Ok(())
        })
        .await
        .expect("complete");
    assert_eq!(lines.next().await["operation"], "op-new");
    store.archive(&op("op-new")).await.expect("archive");
    let left = lines.next().await;
    assert_eq!(
        (&left["event"], &left["operation"]),
        (&"changed".into(), &"op-new".into()),
        "leaving the live ledger is told"
    );
    server.shutdown().await;
}

/// The colours of one theme of the page's stylesheet: `--name: #rrggbb` in a `:root`
/// block (`nth` 0: light, 1: dark).
fn theme(css: &str, nth: usize) -> std::collections::HashMap<String, [f64; 3]> {
    let block = css.split(":root {").nth(nth + 1).expect("a :root block");
    let block = &block[..block.find('}').expect("end of block")];
    block
        .split(';')
        .filter_map(|decl| {
            let (name, value) = decl.split_once(':')?;
            let hex = value.trim().strip_prefix('#')?;
            let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
            Some((
                name.trim().trim_start_matches("--").to_string(),
                [channel(0)?, channel(2)?, channel(4)?].map(|c| c as f64 / 255.0),
            ))
        })
        .collect()
}

/// WCAG 2 contrast ratio of two sRGB colours.
fn contrast(a: [f64; 3], b: [f64; 3]) -> f64 {
    let luminance = |c: [f64; 3]| {
        let lin = |v: f64| {
            if v <= 0.039_28 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    };
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

#[test]
fn every_text_colour_of_the_page_is_readable_in_both_themes() {
    let css = include_str!("../assets/page/style.css");
    let pairs = [
        ("fg", "bg"),
        ("fg", "panel"),
        ("muted", "bg"),
        ("muted", "panel"),
        ("link", "bg"),
        ("ok", "ok-bg"),
        ("bad", "bad-bg"),
        ("run", "run-bg"),
        ("warn", "warn-bg"),
        ("bad", "bg"),
    ];
    for (n, name) in ["light", "dark"].iter().enumerate() {
        let colours = theme(css, n);
        for (text, background) in pairs {
            let ratio = contrast(colours[text], colours[background]);
            assert!(
                ratio >= 4.5,
                "{name}: --{text} on --{background} is {ratio:.2}:1, below 4.5:1"
            );
        }
    }
    // The danger button: white text on --bad (light), the page colour on --bad (dark).
    let (light, dark) = (theme(css, 0), theme(css, 1));
    assert!(contrast([1.0; 3], light["bad"]) >= 4.5);
    assert!(contrast(dark["bg"], dark["bad"]) >= 4.5);
}
