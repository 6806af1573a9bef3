//! Presence on etcd with real processes: a participant posing as another machine is
//! judged by its lease alone (no pid, no clock), so a SIGKILL is seen when etcd expires
//! the lease, and a clock that is far off makes no false crash.
#![cfg(feature = "etcd")]

mod common;
mod etcd_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::peer::Peer;
use etcd_common::{Etcd, unique_prefix};
use tom_dist_ledger::clock::{Clock, SystemClock, Timestamp};
use tom_dist_ledger::ledger::{Connect, Ledger, OperationCallback, OperationOptions};
use tom_dist_ledger::model::{OperationState, ParticipantState};
use tom_dist_ledger::store::{EtcdOptions, EtcdStore};
use tom_dist_ledger::{OperationId, ParticipantId};

/// The stale threshold, and so the lease's TTL.
const TTL: Duration = Duration::from_secs(2);
/// Every test ends long before this, or fails.
const WATCHDOG: Duration = Duration::from_secs(90);

/// The real clock, ten minutes ahead.
#[derive(Debug)]
struct AheadClock;

impl Clock for AheadClock {
    fn now(&self) -> Timestamp {
        SystemClock.now() + chrono::Duration::minutes(10)
    }
}

fn options(prefix: &str) -> EtcdOptions {
    EtcdOptions {
        prefix: prefix.to_string(),
        ..EtcdOptions::default()
    }
}

fn connect(etcd: &Etcd, prefix: &str) -> Connect {
    Connect::etcd_with(etcd.endpoints(), options(prefix))
        .participant(ParticipantId::parse("cli").unwrap())
        .host("host-a")
        .stale_threshold(TTL)
        .cleanup_wait(Duration::from_secs(5))
}

/// A connection whose beats judge the others five times a second.
fn judging(etcd: &Etcd, prefix: &str) -> Connect {
    connect(etcd, prefix)
        .heartbeat_interval(Duration::from_millis(200))
        .heartbeat_jitter(Duration::ZERO)
}

fn peer(mode: &str, etcd: &Etcd, prefix: &str, op: &OperationId, extra: &[&str]) -> Peer {
    let list = etcd.endpoint_list();
    let ttl_ms = TTL.as_millis().to_string();
    let mut args = vec!["--host", "host-b", "--stale-ms", &ttl_ms];
    args.extend_from_slice(extra);
    Peer::start_on(mode, &["--etcd", &list, "--prefix", prefix], op, "w", &args)
}

/// A participant on "another machine" that is SIGKILLed holds no pid this process may
/// judge: its lease expires by etcd's clock, the initiator's `failed()` fires within the
/// TTL and a second, and the cleanup archives the operation as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_participant_elsewhere_expires_with_its_lease() {
    let etcd = Etcd::single();
    let prefix = unique_prefix("lease");
    tokio::time::timeout(WATCHDOG, async {
        // No heartbeat judges ages during the test: only the lease can tell.
        let cli =
            Ledger::connect(connect(&etcd, &prefix).heartbeat_interval(Duration::from_secs(3600)))
                .await
                .unwrap();
        let op = cli.create_operation(OperationOptions::new()).await.unwrap();
        let id = op.operation_id().clone();
        let mut w = peer("hang", &etcd, &prefix, &id, &[]);
        assert_eq!(w.line().await, "ready");
        let inspect = EtcdStore::connect(&etcd.endpoints(), options(&prefix))
            .await
            .unwrap();
        let w_id = ParticipantId::parse("w").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !inspect
            .present_participants(&id)
            .await
            .unwrap()
            .contains(&w_id)
        {
            assert!(
                Instant::now() < deadline,
                "the peer never put its presence key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.signal(nix::sys::signal::Signal::SIGKILL);
        let killed = Instant::now();
        w.wait().await;
        let info = tokio::time::timeout(TTL + Duration::from_secs(1), op.failed())
            .await
            .unwrap_or_else(|_| panic!("failed() not within TTL + 1 s of the kill"));
        let seen = killed.elapsed();
        assert!(seen <= TTL + Duration::from_secs(1), "{seen:?}");
        assert!(info.reason.as_deref().unwrap_or("").contains("w"), "{info}");
        let store = cli.store().clone();
        let archived = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(data) = store.read_archived(&id).await {
                    return data;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the cleanup archives the operation");
        assert_eq!(archived.operation_state, OperationState::Failed);
        let (log, _) = store
            .read_log(
                &id,
                tom_dist_ledger::store::LogKind::Main,
                tom_dist_ledger::store::LogCursor::START,
            )
            .await
            .unwrap();
        assert!(log.contains("etcd lease expired"), "{log}");
        cli.dispose().await;
    })
    .await
    .expect("test hung");
}

/// The initiator's clock runs ten minutes ahead and it judges ages five times a second:
/// by heartbeat age the other participant is long stale, but its lease is alive, so it
/// is never declared crashed; the operation then ends in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_far_ahead_makes_no_false_crash() {
    let etcd = Etcd::single();
    let prefix = unique_prefix("skew");
    tokio::time::timeout(WATCHDOG, async {
        let beats = Arc::new(AtomicUsize::new(0));
        let stale_reports = Arc::new(AtomicUsize::new(0));
        let cli = Ledger::connect(judging(&etcd, &prefix).clock(Arc::new(AheadClock)))
            .await
            .unwrap();
        let op = cli.create_operation(OperationOptions::new()).await.unwrap();
        let id = op.operation_id().clone();
        let mut w = peer("wait-abort", &etcd, &prefix, &id, &["--hb-ms", "500"]);
        assert_eq!(w.line().await, "ready");
        let (counted, stale) = (beats.clone(), stale_reports.clone());
        let counted_stale = beats.clone();
        op.start_heartbeat(tom_dist_ledger::HeartbeatOptions {
            interval: Duration::from_millis(200),
            jitter: Duration::ZERO,
            callback: OperationCallback::new()
                .on_heartbeat_success(move |_, _| {
                    counted.fetch_add(1, Ordering::SeqCst);
                })
                .on_heartbeat_error(move |_, e| {
                    // Judgements count once the initiator follows the peer's lease (its
                    // first clean beat): before, the peer's key may still be on its way.
                    if e.kind == tom_dist_ledger::HeartbeatErrorType::HeartbeatStale
                        && counted_stale.load(Ordering::SeqCst) > 0
                    {
                        stale.fetch_add(1, Ordering::SeqCst);
                    }
                }),
        });
        // Three TTLs' worth of judgements: each would have found the peer stale.
        let judgements = (3 * TTL.as_millis() / 200) as usize;
        common::wait_until("the initiator's judgements", || {
            beats.load(Ordering::SeqCst) + stale_reports.load(Ordering::SeqCst) >= judgements
        })
        .await;
        assert_eq!(
            stale_reports.load(Ordering::SeqCst),
            0,
            "the peer was judged stale"
        );
        let data = cli.store().read(&id).await.unwrap();
        let w_id = ParticipantId::parse("w").unwrap();
        assert_eq!(data.participants[&w_id].state, ParticipantState::Active);
        assert_eq!(data.operation_state, OperationState::Running);
        assert!(op.failure().is_none(), "no failure");
        // The peer leaves on abort; then the operation completes.
        op.set_abort_flag(true).await.unwrap();
        assert!(w.line().await.starts_with("aborted "));
        assert!(w.wait().await.success());
        op.set_abort_flag(false).await.unwrap();
        op.complete().await.unwrap();
        cli.dispose().await;
    })
    .await
    .expect("test hung");
}

/// A registration from another machine with no presence key yet (a joiner puts its key
/// just after its join) is not judged by heartbeat age for one stale threshold from when
/// this process first saw it, however old its heartbeat looks; one that never puts a key
/// is judged after that, and it is declared crashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_gets_one_threshold_to_put_its_key() {
    let etcd = Etcd::single();
    let prefix = unique_prefix("grace");
    tokio::time::timeout(WATCHDOG, async {
        let cli = Ledger::connect(judging(&etcd, &prefix)).await.unwrap();
        let op = cli.create_operation(OperationOptions::new()).await.unwrap();
        let id = op.operation_id().clone();
        let old = (SystemClock.now() - chrono::Duration::minutes(10)).to_rfc3339();
        let ghost: tom_dist_ledger::model::Participant =
            serde_json::from_value(serde_json::json!({
                "pid": 4242, "host": "host-z", "epoch": 1, "state": "active",
                "lastHeartbeat": old, "joinedAt": old,
            }))
            .unwrap();
        // Taken before the registration can be seen, so never after its first sight.
        let registered = Instant::now();
        cli.store()
            .modify(&id, &mut |d: &mut tom_dist_ledger::model::LedgerData| {
                d.participants
                    .insert(ParticipantId::parse("ghost").unwrap(), ghost.clone());
                Ok(())
            })
            .await
            .unwrap();
        let ghost_id = ParticipantId::parse("ghost").unwrap();
        let store = cli.store().clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            while store.read(&id).await.unwrap().participants[&ghost_id].state
                != ParticipantState::Crashed
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a registration that never puts a key is judged in the end");
        let waited = registered.elapsed();
        assert!(waited >= TTL, "judged {waited:?} after it appeared");
        // It held no call: the crash is contained, the operation goes on.
        assert!(op.failure().is_none());
        cli.dispose().await;
    })
    .await
    .expect("test hung");
}
