//! The etcd backend against raw etcd, in the same run, on a real etcd member it starts on
//! free loopback ports (data in a temp directory, removed at the end).
//!
//! `cargo bench --features etcd --bench etcd`
//!
//! - calls: one call started and ended through the ledger (`start_call` + `end`) against
//!   the floor, two raw compare-and-swap transactions of a document of the same size, in
//!   alternating rounds; the ratio of the medians.
//! - lease expiry: a peer process posing as another host (so no pid can tell) holds a
//!   call and is SIGKILLed; the time until the initiator's `failed()` resolves, with a
//!   2 s stale threshold (the lease's TTL).

#[path = "../tests/etcd_common/mod.rs"]
mod etcd_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tom_dist_ledger::ParticipantId;
use tom_dist_ledger::ledger::{CallOptions, Connect, Ledger, OperationOptions};
use tom_dist_ledger::store::EtcdOptions;

const PEER: &str = env!("CARGO_BIN_EXE_worker-ledger-peer");
const CALLS: usize = 300;
const ROUNDS: usize = 5;
const EXPIRIES: usize = 5;
const TTL: Duration = Duration::from_secs(2);

fn connect(etcd: &etcd_common::Etcd, prefix: &str) -> Connect {
    Connect::etcd_with(
        etcd.endpoints(),
        EtcdOptions {
            prefix: prefix.to_string(),
            ..EtcdOptions::default()
        },
    )
    .participant(ParticipantId::parse("bench").expect("valid id"))
    .host("bench-host-a")
    .heartbeat_interval(Duration::from_secs(3600))
    .stale_threshold(TTL)
    .cleanup_wait(Duration::from_secs(5))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Microseconds per call start + end through the ledger.
async fn ledger_round(op: &tom_dist_ledger::Operation) -> f64 {
    let start = Instant::now();
    for _ in 0..CALLS {
        let call = op
            .start_call::<()>(CallOptions::new())
            .await
            .expect("start call");
        call.end(()).await.expect("end call");
    }
    start.elapsed().as_secs_f64() * 1e6 / CALLS as f64
}

/// Microseconds per pair of raw compare-and-swap transactions of `value`.
async fn raw_round(client: &mut Client, key: &str, value: &[u8]) -> f64 {
    let mut revision = client
        .put(key, value, None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    let start = Instant::now();
    for _ in 0..CALLS * 2 {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, value, None)]);
        let response = client.txn(txn).await.expect("txn");
        assert!(response.succeeded(), "uncontended swap");
        revision = response.header().expect("header").revision();
    }
    start.elapsed().as_secs_f64() * 1e6 / CALLS as f64
}

async fn calls(etcd: &etcd_common::Etcd) {
    let ledger = Ledger::connect(connect(etcd, "/bench-calls/"))
        .await
        .expect("connect");
    let op = ledger
        .create_operation(OperationOptions::new().description("bench"))
        .await
        .expect("create");
    let size = ledger
        .store()
        .read(op.operation_id())
        .await
        .expect("read")
        .to_json()
        .len();
    let value = vec![b'x'; size];
    let mut client = Client::connect(etcd.endpoints(), None)
        .await
        .expect("raw client");
    let (mut through_ledger, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        through_ledger.push(ledger_round(&op).await);
        raw.push(raw_round(&mut client, "/bench-raw/doc", &value).await);
    }
    let (l, r) = (median(through_ledger.clone()), median(raw.clone()));
    println!("calls: {CALLS} per round, {ROUNDS} rounds, document {size} bytes");
    println!("  start+end through the ledger: median {l:.0} µs  (rounds {through_ledger:.0?})");
    println!("  two raw CAS transactions:     median {r:.0} µs  (rounds {raw:.0?})");
    println!("  ratio: {:.2}x", l / r);
    op.complete().await.expect("complete");
    ledger.dispose().await;
}

async fn expiry(etcd: &etcd_common::Etcd, run: usize) -> Duration {
    let prefix = format!("/bench-expiry-{run}/");
    let ledger = Ledger::connect(connect(etcd, &prefix))
        .await
        .expect("connect");
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .expect("create");
    let list = etcd.endpoint_list();
    let ttl_ms = TTL.as_millis().to_string();
    let mut child = Command::new(PEER)
        .args(["hang", "--etcd", &list, "--prefix", &prefix])
        .args(["--op", op.operation_id().as_str(), "--participant", "w"])
        .args(["--host", "bench-host-b", "--stale-ms", &ttl_ms])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("peer");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some("ready")
    );
    let inspect = tom_dist_ledger::store::EtcdStore::connect(
        &etcd.endpoints(),
        EtcdOptions {
            prefix: prefix.clone(),
            ..EtcdOptions::default()
        },
    )
    .await
    .expect("inspect");
    let w = ParticipantId::parse("w").expect("valid id");
    while !inspect
        .present_participants(op.operation_id())
        .await
        .expect("presence keys")
        .contains(&w)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().expect("kill peer");
    let killed = Instant::now();
    child.wait().await.expect("wait peer");
    tokio::time::timeout(Duration::from_secs(30), op.failed())
        .await
        .expect("failed() within 30 s");
    let seen = killed.elapsed();
    ledger.dispose().await;
    seen
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let etcd = etcd_common::Etcd::single();
    runtime.block_on(async {
        calls(&etcd).await;
        let mut seen = Vec::new();
        for run in 0..EXPIRIES {
            seen.push(expiry(&etcd, run).await.as_secs_f64() * 1e3);
        }
        let mut sorted = seen.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "lease expiry (TTL {} s): SIGKILL to failed() min {:.0} ms, median {:.0} ms, max {:.0} ms  (runs {seen:.0?})",
            TTL.as_secs(),
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    });
}
