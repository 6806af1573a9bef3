//! The client store over a real `tom-ledger serve`: a change starts from the newest
//! version the store has seen and is one conditional write when that version is current,
//! yet stays exact (a stale version costs a refused write whose answer carries the
//! operation as it is; a change that fails on a version seen earlier runs again on the
//! operation as it is before its error counts). Event streams carry each version written.

mod common;

use std::time::Duration;

use common::process::TestScope;
use common::server::ServerProcess;
use reqwest::StatusCode;
use serde_json::Value;
use tom_dist_ledger::model::LedgerData;
use tom_dist_ledger::store::remote::RemoteStore;
use tom_dist_ledger::store::{LogCursor, LogKind, Store};
use tom_dist_ledger::{Error, OperationId, ParticipantId};

const BOUND: Duration = Duration::from_secs(60);

async fn created(server: &ServerProcess, name: &str) -> (RemoteStore, OperationId) {
    let store = RemoteStore::new(&server.url, Some(server.token.clone())).unwrap();
    let op = OperationId::parse(name).unwrap();
    let data = LedgerData::new(
        op.clone(),
        ParticipantId::parse("cli").unwrap(),
        chrono::Utc::now(),
    );
    store.create(&data).await.unwrap();
    (store, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_a_version_seen_earlier_is_exact() {
    let _scope = TestScope::new();
    let server = ServerProcess::start();
    tokio::time::timeout(BOUND, async {
        let (a, op) = created(&server, "op-exact").await;
        let b = RemoteStore::new(&server.url, Some(server.token.clone())).unwrap();
        // `a` has seen the operation at its first revision; `b` changes it after.
        let seen = a.read_versioned(&op).await.unwrap();
        b.modify(&op, &mut |d: &mut LedgerData| {
            d.description = Some("from b".into());
            Ok(())
        })
        .await
        .unwrap();

        // A change that needs b's change: on a's version it fails, on the operation as
        // it is it succeeds, so it succeeds.
        let mut runs = 0;
        let written = a
            .modify(&op, &mut |d: &mut LedgerData| {
                runs += 1;
                if d.description.as_deref() != Some("from b") {
                    return Err(Error::invalid("description", "b's change is not there"));
                }
                d.aborted = true;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(runs, 2, "once on the version seen, once on a fresh read");
        assert!(written.aborted);
        assert_eq!(written.description.as_deref(), Some("from b"));
        assert_eq!(written.seq, seen.revision.get() + 2);

        // A change that fails on the operation as it is fails, and writes nothing.
        let before = b.read_versioned(&op).await.unwrap();
        let refused = a
            .modify(&op, &mut |_: &mut LedgerData| {
                Err(Error::invalid("change", "refused on purpose"))
            })
            .await;
        assert!(matches!(refused, Err(Error::Invalid { .. })), "{refused:?}");
        assert_eq!(b.read_versioned(&op).await.unwrap(), before);

        // A change on a version that is behind loses nothing: the refused write's answer
        // brings the operation as it is, and the change runs again on it.
        b.modify(&op, &mut |d: &mut LedgerData| {
            d.description = Some("b again".into());
            Ok(())
        })
        .await
        .unwrap();
        let mut runs = 0;
        let written = a
            .modify(&op, &mut |d: &mut LedgerData| {
                runs += 1;
                d.next_epoch += 10;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(runs, 2, "the stale version, then the one the 412 carried");
        assert_eq!(written.description.as_deref(), Some("b again"));
        assert_eq!(written.next_epoch, before.data.next_epoch + 10);
        assert_eq!(b.read(&op).await.unwrap(), written);
    })
    .await
    .expect("within the bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_that_asks_gets_the_operation_as_it_is() {
    let _scope = TestScope::new();
    let server = ServerProcess::start();
    tokio::time::timeout(BOUND, async {
        let (store, op) = created(&server, "op-conflict").await;
        let current = store
            .modify(&op, &mut |d: &mut LedgerData| {
                d.description = Some("now".into());
                Ok(())
            })
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let put = |asks: bool| {
            let request = http
                .put(format!("{}/v1/operations/{op}", server.url))
                .bearer_auth(&server.token)
                .header("if-match", format!("\"{}\"", current.seq - 1))
                .body(serde_json::to_vec(&current).unwrap());
            if asks {
                request.header("x-on-conflict", "current")
            } else {
                request
            }
        };
        let answer = put(true).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::PRECONDITION_FAILED);
        let etag = answer.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", current.seq));
        let body: Value = answer.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("changed meanwhile")
        );
        let sent: LedgerData = serde_json::from_value(body["current"].clone()).unwrap();
        assert_eq!(sent, current);

        // Without asking: one error line, as every error answer.
        let answer = put(false).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::PRECONDITION_FAILED);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        assert_eq!(store.read(&op).await.unwrap(), current);
    })
    .await
    .expect("within the bound");
}

/// An event stream's lines.
struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    async fn open(server: &ServerProcess, op: &OperationId) -> Events {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/operations/{op}/events", server.url))
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        Events {
            response,
            buffer: Vec::new(),
        }
    }

    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            let chunk = self.response.chunk().await.unwrap().expect("stream open");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_of_an_operation_gets_each_version_written() {
    let _scope = TestScope::new();
    let server = ServerProcess::start();
    tokio::time::timeout(BOUND, async {
        let (store, op) = created(&server, "op-streams").await;
        let at_start = store.read_versioned(&op).await.unwrap();
        let mut first = Events::open(&server, &op).await;
        let mut second = Events::open(&server, &op).await;
        for lines in [&mut first, &mut second] {
            let hello = lines.next().await;
            assert_eq!(hello["event"], "hello");
            assert_eq!(hello["revision"], at_start.revision.get());
            assert_eq!(hello["document"]["operationId"], op.as_str());
        }
        let written = store
            .modify(&op, &mut |d: &mut LedgerData| {
                d.aborted = true;
                Ok(())
            })
            .await
            .unwrap();
        for lines in [&mut first, &mut second] {
            let changed: Value = loop {
                let line = lines.next().await;
                if line["event"] == "changed" {
                    break line;
                }
                assert_eq!(line["event"], "ping", "{line}");
            };
            assert_eq!(changed["revision"], written.seq);
            let document: LedgerData = serde_json::from_value(changed["document"].clone()).unwrap();
            assert_eq!(document, written);
            let abort = lines.next().await;
            assert_eq!(abort["event"], "abort");
        }
    })
    .await
    .expect("within the bound");
}

/// A TCP relay in front of the server that counts the HTTP requests passing through it
/// (each request line ends in ` HTTP/1.1\r\n`; a JSON body never holds a raw line break).
struct CountingRelay {
    url: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingRelay {
    async fn start(server: &ServerProcess) -> CountingRelay {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = server.url.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let counted = counted.clone();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    while let Ok(n) = client_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        // The marker may be split between reads: look at the end of the
                        // last read too.
                        let keep = tail.len();
                        tail.extend_from_slice(&buf[..n]);
                        let marker = b" HTTP/1.1\r\n";
                        let found = tail.windows(marker.len()).filter(|w| w == marker).count();
                        let before = tail[..keep].windows(marker.len()).filter(|w| w == marker);
                        counted.fetch_add(found - before.count(), Ordering::SeqCst);
                        let from = tail.len().saturating_sub(marker.len() - 1);
                        tail.drain(..from);
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        CountingRelay { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The main log's lines that `mark` is in.
async fn marked_lines(store: &RemoteStore, op: &OperationId, mark: &str) -> Vec<String> {
    let (text, _) = store
        .read_log(op, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.contains(mark))
        .map(|l| l[l.find(mark).unwrap()..].to_string())
        .collect()
}

/// A change with its log lines is one request, the lines are in the main log when the
/// answer comes, and with many writers at once the lines are in the order of the writes
/// they describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_with_lines_is_one_request_and_the_lines_keep_the_write_order() {
    let _scope = TestScope::new();
    let server = ServerProcess::start();
    tokio::time::timeout(BOUND, async {
        let (direct, op) = created(&server, "op-logged").await;
        let relay = CountingRelay::start(&server).await;
        let store = RemoteStore::new(&relay.url, Some(server.token.clone())).unwrap();
        store.read_versioned(&op).await.unwrap();
        let sent_before = relay.requests();
        let lines = vec!["#mark one".to_string(), "#mark two".to_string()];
        let (written, appended) = store
            .modify_logged(
                &op,
                &mut |d: &mut LedgerData| {
                    d.description = Some("logged".into());
                    Ok(())
                },
                &lines,
            )
            .await
            .unwrap();
        appended.unwrap();
        assert_eq!(relay.requests() - sent_before, 1, "one request for both");
        assert_eq!(written.description.as_deref(), Some("logged"));
        assert_eq!(marked_lines(&direct, &op, "#mark").await, lines);

        // Eight writers, three changes each: each change appends its name to the
        // description (the order of the writes) and logs two lines naming it.
        let writers = (0..8).map(|w| {
            let store = RemoteStore::new(&server.url, Some(server.token.clone())).unwrap();
            let op = op.clone();
            tokio::spawn(async move {
                for round in 0..3 {
                    let name = format!("w{w}r{round}");
                    let lines = vec![format!("#order {name} start"), format!("#order {name} end")];
                    let (_, appended) = store
                        .modify_logged(
                            &op,
                            &mut |d: &mut LedgerData| {
                                let before = d.description.take().unwrap_or_default();
                                d.description = Some(format!("{before} {name}"));
                                Ok(())
                            },
                            &lines,
                        )
                        .await
                        .unwrap();
                    appended.unwrap();
                }
            })
        });
        for writer in writers.collect::<Vec<_>>() {
            writer.await.unwrap();
        }
        let order = direct.read(&op).await.unwrap().description.unwrap();
        let expected: Vec<String> = order
            .split_whitespace()
            .skip(1)
            .flat_map(|name| [format!("#order {name} start"), format!("#order {name} end")])
            .collect();
        assert_eq!(expected.len(), 48);
        assert_eq!(marked_lines(&direct, &op, "#order").await, expected);
    })
    .await
    .expect("within the bound");
}

/// A write with lines that is refused (another write came first) appends none of them;
/// a plain write (no lines header) is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_appends_none_of_its_lines() {
    let _scope = TestScope::new();
    let server = ServerProcess::start();
    tokio::time::timeout(BOUND, async {
        let (store, op) = created(&server, "op-refused-lines").await;
        let current = store.read_versioned(&op).await.unwrap();
        let http = reqwest::Client::new();
        let put = |revision: u64, line: &str| {
            let body = serde_json::json!({ "data": current.data, "lines": [line] });
            http.put(format!("{}/v1/operations/{op}", server.url))
                .bearer_auth(&server.token)
                .header("if-match", format!("\"{revision}\""))
                .header("x-with-lines", "main")
                .json(&body)
        };
        let stale = put(current.revision.get() + 7, "#line refused")
            .send()
            .await;
        assert_eq!(stale.unwrap().status(), StatusCode::PRECONDITION_FAILED);
        let fine = put(current.revision.get(), "#line written").send().await;
        assert_eq!(fine.unwrap().status(), StatusCode::OK);
        let again = put(current.revision.get(), "#line refused").send().await;
        assert_eq!(again.unwrap().status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(
            marked_lines(&store, &op, "#line").await,
            vec!["#line written".to_string()]
        );
        let plain = http
            .put(format!("{}/v1/operations/{op}", server.url))
            .bearer_auth(&server.token)
            .header("if-match", format!("\"{}\"", current.revision.get() + 1))
            .json(&current.data)
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(marked_lines(&store, &op, "#line").await.len(), 1);
    })
    .await
    .expect("within the bound");
}
