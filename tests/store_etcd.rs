//! The `EtcdStore`: the behavioural store suite on a real etcd member, and what only this
//! backend has (prefixes sharing a cluster, resuming watches, lost replies, bad values).
#![cfg(feature = "etcd")]

#[macro_use]
mod store_suite;
mod etcd_common;

use std::sync::Arc;

use etcd_common::{Etcd, unique_prefix};
use store_suite::{TestLedger, sample};
use tom_dist_ledger::store::{
    ChangeKind, EtcdOptions, EtcdStore, LogCursor, LogKind, Revision, Store,
};

fn options(prefix: &str) -> EtcdOptions {
    EtcdOptions {
        prefix: prefix.to_string(),
        ..EtcdOptions::default()
    }
}

/// A handle on the ledger under `prefix`, from inside an async test.
async fn open(etcd: &Etcd, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&etcd.endpoints(), options(prefix))
        .await
        .expect("connect to the test etcd")
}

async fn etcd_ledger() -> TestLedger {
    let etcd = Etcd::single();
    let endpoints = etcd.endpoints();
    let prefix = unique_prefix("suite");
    // `TestLedger::open` is synchronous and called from the (multi-threaded) test
    // runtime: each handle connects in place.
    TestLedger::new(etcd, move || {
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(EtcdStore::connect(&endpoints, options(&prefix)))
        })
        .expect("connect to the test etcd");
        Arc::new(store) as Arc<dyn Store>
    })
}

mod suite {
    store_suite!(super::etcd_ledger);
}

/// Two ledgers with different prefixes share one cluster without seeing each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_ledgers_apart() {
    let etcd = Etcd::single();
    let a = open(&etcd, "/a/").await;
    let b = open(&etcd, "/b/").await;
    a.create(&sample("op_shared_name")).await.unwrap();
    assert!(b.list().await.unwrap().is_empty());
    b.create(&sample("op_shared_name")).await.unwrap();
    a.archive(&sample("op_shared_name").operation_id)
        .await
        .unwrap();
    assert_eq!(b.list().await.unwrap().len(), 1);
    assert!(b.list_archived().await.unwrap().is_empty());
}

/// A cluster that does not answer is `Unavailable`, naming the endpoint, once the
/// deadline has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let options = EtcdOptions {
        deadline: std::time::Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        EtcdStore::connect(std::slice::from_ref(&endpoint), options),
    )
    .await
    .expect("the deadline bounds the attempt")
    .unwrap_err();
    assert!(
        matches!(err, tom_dist_ledger::Error::Unavailable { ref location, .. } if location.contains(&endpoint)),
        "{err}"
    );
}

/// A watch whose start was compacted away reports a resync (changes were lost: read
/// again), then goes on with the changes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_resyncs() {
    let etcd = Etcd::single();
    let prefix = unique_prefix("compact");
    // This handle saw the cluster's revision before everything below.
    let behind = open(&etcd, &prefix).await;
    let writer = open(&etcd, &prefix).await;
    let data = sample("op_compacted");
    let id = &data.operation_id;
    writer.create(&data).await.unwrap();
    for _ in 0..5 {
        writer.modify(id, &mut |_| Ok(())).await.unwrap();
    }
    writer.compact_history(0).await.unwrap();
    let mut changes = behind.watch(id).unwrap();
    let first = tokio::time::timeout(store_suite::PATIENCE, changes.next())
        .await
        .expect("a change report in time")
        .expect("the watch goes on");
    assert_eq!(first.kind, ChangeKind::Resync, "{first:?}");
    let written = writer.modify(id, &mut |_| Ok(())).await.unwrap();
    loop {
        let change = tokio::time::timeout(store_suite::PATIENCE, changes.next())
            .await
            .expect("the change after the compaction in time")
            .expect("the watch goes on");
        if change.revision == Some(Revision::new(written.seq)) {
            break;
        }
    }
}

/// A watch outlives a restart of its member: it resumes from the revision after the
/// last change it delivered and reports the changes made after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_its_member_restarts() {
    let mut etcd = Etcd::single();
    let prefix = unique_prefix("restart");
    let watcher = open(&etcd, &prefix).await;
    let writer = open(&etcd, &prefix).await;
    let data = sample("op_restart");
    let id = &data.operation_id;
    writer.create(&data).await.unwrap();
    let mut changes = watcher.watch(id).unwrap();
    let before = writer.modify(id, &mut |_| Ok(())).await.unwrap();
    // The watch is up once it reports a change: the create's or this one's (either may
    // come without a revision when the watch was created after it: it may predate the
    // subscription).
    let first = next_revision(&mut changes).await;
    assert!(
        first.is_none_or(|r| r <= Revision::new(before.seq)),
        "{first:?}"
    );
    etcd.members[0].kill();
    etcd.members[0].restart();
    tokio::task::block_in_place(|| etcd.wait_healthy());
    let after = writer.modify(id, &mut |_| Ok(())).await.unwrap();
    loop {
        let revision = next_revision(&mut changes).await;
        if revision == Some(Revision::new(after.seq)) {
            break;
        }
    }
    assert!(!changes.is_ended());
}

async fn next_revision(changes: &mut tom_dist_ledger::store::ChangeStream) -> Option<Revision> {
    tokio::time::timeout(store_suite::PATIENCE, changes.next())
        .await
        .expect("a change in time")
        .expect("the watch goes on")
        .revision
}

/// A log keeps its newest lines within the bound: a handle trims the oldest beyond it
/// every 256 of its appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_keep_their_newest_lines_within_the_bound() {
    let etcd = Etcd::single();
    let store = EtcdStore::connect(
        &etcd.endpoints(),
        EtcdOptions {
            prefix: unique_prefix("log-bound"),
            log_max_lines: 10,
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap();
    let data = sample("op_log_bound");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    for n in 0..256 {
        store
            .append_log(id, LogKind::Main, &format!("line {n}"))
            .await
            .unwrap();
    }
    let (text, _) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let expected: Vec<String> = (246..256).map(|n| format!("line {n}")).collect();
    assert_eq!(lines, expected);
}

/// Archiving keeps the newest `max_backups` archives; older ones go with their logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_keeps_the_newest_archives() {
    let etcd = Etcd::single();
    let store = EtcdStore::connect(
        &etcd.endpoints(),
        EtcdOptions {
            prefix: unique_prefix("retention"),
            max_backups: 2,
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap();
    // Archived in an order that is not the ids' order.
    let ids = ["op_r_c", "op_r_a", "op_r_d", "op_r_b"];
    for name in ids {
        let data = sample(name);
        store.create(&data).await.unwrap();
        store
            .append_log(&data.operation_id, LogKind::Main, "kept while archived")
            .await
            .unwrap();
        store.archive(&data.operation_id).await.unwrap();
    }
    let kept: Vec<String> = store
        .list_archived()
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(kept, vec!["op_r_b".to_string(), "op_r_d".to_string()]);
    for pruned in ["op_r_c", "op_r_a"] {
        let id = store_suite::op(pruned);
        assert!(matches!(
            store.read_log(&id, LogKind::Main, LogCursor::START).await,
            Err(tom_dist_ledger::Error::OperationNotFound(_))
        ));
    }
    let (log, _) = store
        .read_log(&store_suite::op("op_r_b"), LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(log, "kept while archived\n");
}

/// A change swaps against the handle's last value: one request with its log lines when
/// nobody else wrote; after another handle's write, the refused swap brings the current
/// value (two requests, no separate read); a change refused on the old value reads once
/// before it is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_and_its_lines_cost_one_round_trip() {
    let etcd = Etcd::single();
    let prefix = unique_prefix("round-trips");
    let (a, b) = (open(&etcd, &prefix).await, open(&etcd, &prefix).await);
    let mut data = sample("op_round_trips");
    data.call_frames.clear();
    let id = &data.operation_id;
    a.create(&data).await.unwrap();
    let sent = |s: &EtcdStore| s.cluster().requests_sent();

    let before = sent(&a);
    let lines = ["CALL_STARTED one", "CALL_ENDED one"].map(String::from);
    let (written, logged) = a
        .modify_logged(
            id,
            &mut |d| {
                d.description = Some("one".into());
                Ok(())
            },
            &lines,
        )
        .await
        .unwrap();
    logged.unwrap();
    assert_eq!(
        sent(&a) - before,
        1,
        "one transaction for the change and its lines"
    );
    assert_eq!(written.seq, data.seq + 1);

    b.modify(id, &mut |d| {
        d.call_frames.push(store_suite::frame(
            &store_suite::participant("b"),
            "call_b_1_bbbb",
        ));
        Ok(())
    })
    .await
    .unwrap();
    let before = sent(&a);
    let written = a
        .modify(id, &mut |d| {
            d.aborted = true;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(sent(&a) - before, 2, "a refused swap and one on its answer");
    assert_eq!(written.call_frames.len(), 1, "b's frame is kept");

    a.modify(id, &mut |d| {
        d.call_frames.clear();
        Ok(())
    })
    .await
    .unwrap();
    b.modify(id, &mut |d| {
        d.call_frames.push(store_suite::frame(
            &store_suite::participant("b"),
            "call_b_2_cccc",
        ));
        Ok(())
    })
    .await
    .unwrap();
    let before = sent(&a);
    a.modify(id, &mut |d| {
        if d.call_frames.is_empty() {
            return Err(tom_dist_ledger::Error::invalid("frames", "none"));
        }
        d.call_frames.clear();
        Ok(())
    })
    .await
    .expect("made on the current data");
    assert_eq!(sent(&a) - before, 2, "a read, then the swap");
    let (log, _) = a
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(log, "CALL_STARTED one\nCALL_ENDED one\n");
}

/// Lines written in one transaction share a revision: reads keep their order across
/// pages and cursors, and trimming keeps the newest within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_one_transaction_keep_their_order_and_bound() {
    let etcd = Etcd::single();
    let store = open(&etcd, &unique_prefix("txn-lines")).await;
    let data = sample("op_txn_lines");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    // 600 lines: more than one page of a read (500 keys).
    let mut expected = String::new();
    let mut cursor_after_first = None;
    for n in 0..200 {
        let lines: Vec<String> = (0..3).map(|i| format!("line {n}.{i}")).collect();
        for line in &lines {
            expected.push_str(line);
            expected.push('\n');
        }
        store
            .modify_logged(id, &mut |_| Ok(()), &lines)
            .await
            .unwrap()
            .1
            .unwrap();
        if n == 0 {
            cursor_after_first = Some(
                store
                    .read_log(id, LogKind::Main, LogCursor::START)
                    .await
                    .unwrap()
                    .1,
            );
        }
    }
    let (text, _) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(text, expected);
    let (rest, _) = store
        .read_log(id, LogKind::Main, cursor_after_first.unwrap())
        .await
        .unwrap();
    assert_eq!(rest, expected["line 0.0\nline 0.1\nline 0.2\n".len()..]);

    let bounded = EtcdStore::connect(
        &etcd.endpoints(),
        EtcdOptions {
            prefix: unique_prefix("txn-lines-bound"),
            log_max_lines: 10,
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap();
    bounded.create(&data).await.unwrap();
    // 90 transactions of 3 lines: the 86th crosses 256 lines and trims to the newest 10
    // (lines 248 to 257); the 12 after it stay.
    for n in 0..90 {
        let lines: Vec<String> = (0..3).map(|i| format!("line {}", n * 3 + i)).collect();
        bounded
            .modify_logged(id, &mut |_| Ok(()), &lines)
            .await
            .unwrap()
            .1
            .unwrap();
    }
    let (text, _) = bounded
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    let kept: Vec<&str> = text.lines().collect();
    let expected: Vec<String> = (248..270).map(|n| format!("line {n}")).collect();
    assert_eq!(kept, expected);
}

/// The next change a watch reports, within the suite's patience.
async fn next_change(
    changes: &mut tom_dist_ledger::store::ChangeStream,
) -> tom_dist_ledger::store::OperationChange {
    tokio::time::timeout(store_suite::PATIENCE, changes.next())
        .await
        .expect("a change report in time")
        .expect("the watch goes on")
}

/// A watch names the `seq` of every write, the handle's own ones (known without reading
/// the value) and another handle's; another handle's value comes with its event, so the
/// next change swaps against it in one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_names_each_write_and_keeps_the_handle_current() {
    let etcd = Etcd::single();
    let prefix = unique_prefix("watch-seq");
    let (a, b) = (open(&etcd, &prefix).await, open(&etcd, &prefix).await);
    let data = sample("op_watch_seq");
    let id = &data.operation_id;
    a.create(&data).await.unwrap();
    let mut changes = a.watch(id).unwrap();
    let describe = |text: String| {
        move |d: &mut tom_dist_ledger::model::LedgerData| {
            d.description = Some(text.clone());
            Ok(())
        }
    };
    // Once a first change is reported the watch exists: every later write names its seq.
    a.modify(id, &mut describe("first".into())).await.unwrap();
    next_change(&mut changes).await;
    for round in 0..3 {
        let own = a
            .modify(id, &mut describe(format!("a {round}")))
            .await
            .unwrap();
        let change = next_change(&mut changes).await;
        assert_eq!(change.revision, Some(Revision::new(own.seq)), "own write");

        let other = b
            .modify(id, &mut describe(format!("b {round}")))
            .await
            .unwrap();
        let change = next_change(&mut changes).await;
        assert_eq!(change.revision, Some(Revision::new(other.seq)), "b's write");

        let before = a.cluster().requests_sent();
        let mut seen = None;
        let next = a
            .modify(id, &mut |d| {
                seen = d.description.clone();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            a.cluster().requests_sent() - before,
            1,
            "swapped against the value the watch brought"
        );
        assert_eq!(seen, other.description);
        assert_eq!(next.seq, other.seq + 1);
        let change = next_change(&mut changes).await;
        assert_eq!(change.revision, Some(Revision::new(next.seq)));
    }
}
