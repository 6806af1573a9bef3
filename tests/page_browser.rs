//! The status page of `tom-ledger serve` in a real headless Chromium: it lists a running
//! operation, updates when a worker finishes without a reload, shows a participant that
//! was SIGKILLed as crashed, and its abort button aborts the operation only with the
//! token (the run then ends as documented for an abort: exit status 1, workers stopped,
//! temp resources deleted, the operation failed and archived).
//!
//! Every test starts a real `tom-ledger serve` and a real `tom-ledger run` in its temp
//! directory, writes screenshots of what it checked (into `docs/screenshots/` with
//! `TOM_LEDGER_SCREENSHOTS=1`), and leaves no process behind. The tests of this file take
//! turns, so one browser runs at a time.

mod browser_common;
mod cli_common;

use std::time::Duration;

use browser_common::{Browser, PATIENCE, Scope};
use cli_common::{Env, Live, plan, wait_bounded};
use nix::sys::signal::Signal;
use serde_json::Value;

/// One browser at a time (each test's own, one after the other).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test directory whose ledger path carries the marker, so `serve`, `run`, `exec` and
/// the workers are all found (and killed) by it.
fn env() -> Env {
    let mut env = Env::new();
    env.ledger = env.dir.path().join(format!("{}-ledger", env.marker));
    env
}

/// A running `tom-ledger serve --port 0` and its token.
struct Server {
    live: Live,
    url: String,
    token: String,
}

fn serve(env: &Env) -> Server {
    let mut live = Live::start(env.cmd(&["--json", "serve", "--port", "0"]));
    let line = live.wait_for_line("the listening event", |l| l.contains("\"listening\""));
    let event: Value = serde_json::from_str(&line).expect("json listening event");
    let url = event["url"].as_str().expect("url").to_string();
    let token = std::fs::read_to_string(env.ledger.join("server.token"))
        .expect("generated token")
        .trim()
        .to_string();
    Server { live, url, token }
}

impl Server {
    /// The page with the token in the URL fragment (never sent to the server).
    fn page(&self, fragment_rest: &str) -> String {
        format!("{}/#token={}{fragment_rest}", self.url, self.token)
    }

    fn stop(self) {
        self.live.signal(Signal::SIGINT);
        let out = self.live.finish();
        assert_eq!(out.code(), 130, "serve ends on SIGINT: {}", out.stderr);
    }
}

/// A worker that runs until `$D/{file}` exists (`worker-ticker`).
fn until_file(env: &Env, name: &str, file: &str, extra: &str) -> String {
    format!(
        "[[worker]]\nname = \"{name}\"\ncmd = [\"worker-ticker\", \"{}\", \"--every-ms\", \"200\", \"--marker\", \"{}\"]\n{extra}\n",
        env.path(file).display(),
        env.marker
    )
}

/// `run --json -j 4 --plan` of `workers` (all of them at once, however many CPUs);
/// returns it with its operation id.
fn start_run(env: &Env, workers: &[String]) -> (Live, String) {
    let p = plan(env, workers);
    let mut run = Live::start(env.cmd(&["--json", "run", "-j", "4", "--plan", &p]));
    let started = run.wait_for_line("operation_started", |l| l.contains("operation_started"));
    let op = serde_json::from_str::<Value>(&started).expect("json")["operation"]
        .as_str()
        .expect("operation id")
        .to_string();
    (run, op)
}

/// A CSS selector of one operation's row in the list.
fn row(op: &str) -> String {
    format!("#operations tr[data-operation='{op}']")
}

/// The operation's abort flag as `tom-ledger status` reads it from the ledger.
fn aborted_in_ledger(env: &Env, op: &str) -> bool {
    let out = env.run(&["--json", "status", op]);
    out.expect_code(0);
    out.json()[0]["aborted"].as_bool().expect("aborted flag")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_shows_a_running_operation_and_follows_a_worker_finishing() {
    let _turn = TURN.lock().await;
    let env = env();
    let scope = Scope::new(&env.marker, Duration::from_secs(180));
    let server = serve(&env);
    let (run, op) = start_run(
        &env,
        &[
            until_file(&env, "quick", "release-quick", ""),
            until_file(&env, "slow", "release-slow", ""),
        ],
    );
    let browser = Browser::start(env.dir.path(), &env.marker, 1100, 700).await;
    browser.goto(&server.page("")).await;

    let r = row(&op);
    browser
        .wait_for(
            "the running operation with two running calls",
            &format!(
                "const r = document.querySelector(\"{r}\"); return r && r.dataset.state === 'running' \
                 && r.querySelector('[data-count=running]').textContent === '2';"
            ),
        )
        .await;
    let hash = browser.js("return location.hash").await;
    assert!(
        !hash.as_str().unwrap_or("").contains(&server.token),
        "the token is taken out of the address bar: {hash}"
    );
    let initiator = browser
        .js(&format!(
            "return document.querySelector(\"{r} td:nth-child(3)\").textContent"
        ))
        .await;
    assert!(
        initiator.as_str().is_some_and(|i| i.starts_with("run-")),
        "{initiator}"
    );
    browser.screenshot("list-running.png").await;

    // Marks this document: a reload would lose the mark.
    browser.js("window.notReloaded = true; return null").await;
    std::fs::write(env.path("release-quick"), "").expect("release quick");
    browser
        .wait_for(
            "one call done, one running",
            &format!(
                "const r = document.querySelector(\"{r}\"); return r \
                 && r.querySelector('[data-count=done]').textContent === '1' \
                 && r.querySelector('[data-count=running]').textContent === '1';"
            ),
        )
        .await;
    assert_eq!(
        browser.js("return window.notReloaded === true").await,
        Value::Bool(true),
        "updated through the event stream, not by reloading"
    );
    browser.screenshot("list-worker-finished.png").await;

    // Keyboard: focus the operation's button and press Enter to open it.
    let open = browser
        .client
        .find(fantoccini::Locator::Css(&format!("{r} button")))
        .await
        .expect("the operation's button");
    browser
        .js(&format!(
            "document.querySelector(\"{r} button\").focus(); return null"
        ))
        .await;
    open.send_keys("\u{E007}").await.expect("press Enter");
    browser
        .wait_for(
            "the operation's view with the finished and the running call",
            "const calls = [...document.querySelectorAll('#calls tr[data-outcome]')].map(t => t.dataset.outcome).sort().join(','); \
             return !document.getElementById('detail-section').hidden && calls === 'ok,running' \
             && document.querySelectorAll('#timeline [data-span]').length === 2 \
             && document.getElementById('detail-summary').textContent.includes('1 running, 1 done, 0 failed') \
             && document.querySelector('#participants tr[data-liveness=alive]') !== null;",
        )
        .await;
    // The timeline's bars are drawn to scale (widths set under the page's CSP).
    let widths = browser
        .js("return [...document.querySelectorAll('#timeline .bar')].map(b => b.getBoundingClientRect().width)")
        .await;
    let widths: Vec<f64> = widths
        .as_array()
        .expect("bar widths")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(
        widths.len(),
        3,
        "one lane for the participant, one per worker"
    );
    assert!(
        widths.iter().all(|&w| w > 20.0),
        "bars drawn to scale: {widths:?}"
    );
    browser.screenshot("operation-running.png").await;
    browser.set_size(390, 844).await;
    let overflow = browser
        .js("return document.documentElement.scrollWidth > window.innerWidth + 1")
        .await;
    assert_eq!(
        overflow,
        Value::Bool(false),
        "no sideways scrolling on a phone"
    );
    browser.screenshot("operation-phone.png").await;

    std::fs::write(env.path("release-slow"), "").expect("release slow");
    let out = run.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    browser
        .wait_for(
            "the operation completed",
            "return document.getElementById('detail-section').dataset.state === 'completed'",
        )
        .await;

    browser.close().await;
    server.stop();
    env.assert_no_leftovers();
    drop(scope);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_participant_shows_as_crashed() {
    let _turn = TURN.lock().await;
    let env = env();
    let scope = Scope::new(&env.marker, Duration::from_secs(180));
    let server = serve(&env);
    let (run, op) = start_run(&env, &[until_file(&env, "holder", "release", "")]);
    // A second participant: `exec` joins the operation with a hanging worker; its crash
    // is contained to its call, so the operation goes on and the page can show it.
    let mut exec = Live::start(env.cmd(&[
        "exec",
        "--operation",
        &op,
        "--no-fail-on-crash",
        "--",
        "worker-hang",
        "--marker",
        &env.marker,
    ]));
    exec.wait_for_line("the hanging worker's ready", |l| l == "ready");
    let exec_id = format!("exec-{}", exec.child.id());

    let browser = Browser::start(env.dir.path(), &env.marker, 1100, 1500).await;
    browser.goto(&server.page(&format!("&op={op}"))).await;
    let participant = format!("#participants tr[data-participant='{exec_id}']");
    browser
        .wait_for(
            "the exec participant alive",
            &format!(
                "const p = document.querySelector(\"{participant}\"); return p && p.dataset.liveness === 'alive';"
            ),
        )
        .await;

    exec.signal(Signal::SIGKILL);
    let status = wait_bounded(&mut exec.child, PATIENCE);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    browser
        .wait_for(
            "the exec participant crashed",
            &format!(
                "const p = document.querySelector(\"{participant}\"); return p && p.dataset.liveness === 'crashed' \
                 && p.textContent.includes('{pid}');",
                pid = exec.child.id()
            ),
        )
        .await;
    browser
        .wait_for(
            "its call ended as crashed",
            &format!(
                "return [...document.querySelectorAll('#calls tr[data-outcome=crashed]')] \
                 .some(t => t.textContent.includes('{exec_id}'))"
            ),
        )
        .await;
    let state = browser
        .js("return document.getElementById('detail-section').dataset.state")
        .await;
    assert_eq!(state, "running", "a contained crash: the operation goes on");
    browser.screenshot("participant-crashed.png").await;

    std::fs::write(env.path("release"), "").expect("release");
    let out = run.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    browser.close().await;
    server.stop();
    env.assert_no_leftovers();
    drop(scope);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abort_button_needs_the_token_and_aborts_the_run() {
    let _turn = TURN.lock().await;
    let env = env();
    let scope = Scope::new(&env.marker, Duration::from_secs(180));
    let server = serve(&env);
    std::fs::write(env.path("held.tmp"), "temp").expect("temp file");
    let (mut run, op) = start_run(
        &env,
        &[until_file(
            &env,
            "holder",
            "never-released",
            "temp = [\"held.tmp\"]",
        )],
    );
    let browser = Browser::start(env.dir.path(), &env.marker, 1100, 900).await;
    browser.goto(&server.page(&format!("&op={op}"))).await;
    browser
        .wait_for(
            "the abort button of the running operation",
            "const b = document.getElementById('abort-button'); \
             return !b.hidden && document.querySelector('#calls tr[data-outcome=running]') !== null;",
        )
        .await;

    // Asking first: Escape cancels, nothing is sent.
    browser
        .js("document.getElementById('abort-button').click(); return null")
        .await;
    browser
        .wait_for(
            "the confirmation dialog",
            "return document.getElementById('abort-dialog').open",
        )
        .await;
    let dialog = browser
        .client
        .find(fantoccini::Locator::Id("abort-cancel"))
        .await
        .expect("cancel button");
    dialog.send_keys("\u{E00C}").await.expect("press Escape");
    browser
        .wait_for(
            "the dialog closed",
            "return !document.getElementById('abort-dialog').open",
        )
        .await;
    assert!(
        !aborted_in_ledger(&env, &op),
        "a cancelled dialog aborts nothing"
    );

    // Without the token: refused by the server, nothing aborted.
    browser
        .js("document.getElementById('abort-button').click(); return null")
        .await;
    let token_field = browser
        .client
        .wait()
        .at_most(PATIENCE)
        .for_element(fantoccini::Locator::Id("abort-token"))
        .await
        .expect("token field");
    token_field.clear().await.expect("clear the token");
    browser
        .client
        .find(fantoccini::Locator::Id("abort-confirm"))
        .await
        .expect("confirm button")
        .click()
        .await
        .expect("confirm");
    browser
        .wait_for(
            "the refusal",
            "const r = document.getElementById('abort-result'); \
             return r.dataset.outcome === 'refused' && r.textContent.includes('Nothing was aborted');",
        )
        .await;
    browser.screenshot("abort-refused.png").await;
    assert!(!aborted_in_ledger(&env, &op), "no token, no abort");
    assert!(
        run.child.try_wait().expect("wait run").is_none(),
        "the run goes on"
    );
    // The same from outside the page: without or with a wrong token, 401.
    let http = reqwest::Client::new();
    let abort_url = format!("{}/page/api/operations/{op}/abort", server.url);
    for header in [None, Some("Bearer wrong-token-0123456789")] {
        let mut request = http.post(&abort_url);
        if let Some(h) = header {
            request = request.header("authorization", h);
        }
        let answer = request.send().await.expect("abort request");
        assert_eq!(answer.status().as_u16(), 401, "{header:?}");
    }
    assert!(
        !aborted_in_ledger(&env, &op),
        "refused requests abort nothing"
    );

    // With the token (prefilled from the page's own): the run ends as for an abort.
    browser
        .js("document.getElementById('abort-button').click(); return null")
        .await;
    browser
        .wait_for(
            "the dialog with the token",
            &format!(
                "return document.getElementById('abort-dialog').open \
                 && document.getElementById('abort-token').value === '{}'",
                server.token
            ),
        )
        .await;
    browser
        .client
        .find(fantoccini::Locator::Id("abort-confirm"))
        .await
        .expect("confirm button")
        .click()
        .await
        .expect("confirm");
    let status = wait_bounded(&mut run.child, PATIENCE);
    assert_eq!(status.code(), Some(1), "an aborted run exits with 1");
    let out = run.finish();
    assert!(
        out.json()
            .iter()
            .any(|e| e["event"] == "operation_finished" && e["status"] != "ok"),
        "{}",
        out.stdout
    );
    assert!(
        !env.path("held.tmp").exists(),
        "the temp resource is deleted"
    );
    browser
        .wait_for(
            "the operation failed, aborted, archived",
            "const d = document.getElementById('detail-section'); \
             return d.dataset.state === 'failed' && d.dataset.aborted === '1' \
             && document.getElementById('abort-result').dataset.outcome === 'accepted' \
             && document.getElementById('abort-button').hidden;",
        )
        .await;
    browser.screenshot("abort-accepted.png").await;
    let log = env.run(&["log", &op]);
    assert!(
        log.stdout.contains("ABORT_REQUESTED by=status-page"),
        "{}",
        log.stdout
    );

    browser.close().await;
    server.stop();
    env.assert_no_leftovers();
    drop(scope);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_to_a_restarted_server_and_shows_what_happened_meanwhile() {
    let _turn = TURN.lock().await;
    let env = env();
    let scope = Scope::new(&env.marker, Duration::from_secs(180));
    // The same token across both servers, as a deployment with --token-file has.
    let token_file = env.write("token", "reconnect-test-token-0123456789");
    let token_arg = token_file.to_str().expect("utf-8 path");
    let start = |port: &str| {
        let mut live =
            Live::start(env.cmd(&["--json", "serve", "--port", port, "--token-file", token_arg]));
        let line = live.wait_for_line("the listening event", |l| l.contains("\"listening\""));
        let event: Value = serde_json::from_str(&line).expect("json listening event");
        let url = event["url"].as_str().expect("url").to_string();
        Server {
            live,
            url,
            token: "reconnect-test-token-0123456789".into(),
        }
    };
    let first = start("0");
    let port = first.url.rsplit(':').next().expect("port").to_string();
    let (run, op) = start_run(&env, &[until_file(&env, "holder", "release", "")]);
    let browser = Browser::start(env.dir.path(), &env.marker, 1100, 900).await;
    browser.goto(&first.page(&format!("&op={op}"))).await;
    browser
        .wait_for(
            "the running operation, followed live",
            "return document.getElementById('detail-section').dataset.state === 'running' \
             && document.getElementById('connection').textContent === 'live'",
        )
        .await;
    browser.js("window.notReloaded = true; return null").await;

    first.stop();
    browser
        .wait_for(
            "the page noticing the server is gone",
            "return document.getElementById('connection').textContent.startsWith('reconnecting')",
        )
        .await;
    // Meanwhile the run ends and archives its operation.
    std::fs::write(env.path("release"), "").expect("release");
    let out = run.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);

    let second = start(&port);
    browser
        .wait_for(
            "the completed operation after reconnecting",
            "return document.getElementById('detail-section').dataset.state === 'completed' \
             && document.getElementById('abort-button').hidden",
        )
        .await;
    assert_eq!(
        browser.js("return window.notReloaded === true").await,
        Value::Bool(true),
        "no reload"
    );
    browser.screenshot("reconnected.png").await;

    browser.close().await;
    second.stop();
    env.assert_no_leftovers();
    drop(scope);
}
