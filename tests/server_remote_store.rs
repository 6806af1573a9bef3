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
use tom_dist_ledger::store::Store;
use tom_dist_ledger::store::remote::RemoteStore;
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
