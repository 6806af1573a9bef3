//! The ledger behaviour suite through `tom-ledger serve`: every participant connects
//! with `Connect::remote` to a real server process on a loopback port, serving a file
//! ledger in a temp directory.

mod common;
mod ledger_suite;

use common::server::ServerProcess;
use ledger_suite::Backend;
use tom_dist_ledger::Connect;

struct RemoteBackend {
    server: ServerProcess,
}

impl RemoteBackend {
    fn new() -> Self {
        Self {
            server: ServerProcess::start(),
        }
    }
}

impl Backend for RemoteBackend {
    fn connect(&self, _participant: &str) -> Connect {
        Connect::remote(&self.server.url).token(&self.server.token)
    }

    fn shared_location(&self) -> Option<(&'static str, String)> {
        Some(("TOM_LEDGER_URL", self.server.url.clone()))
    }

    /// Who wrote a record is the server's word, no proof for automatic recovery
    /// (SPEC §15).
    fn proves_provenance(&self) -> bool {
        false
    }

    /// Remote participants' heartbeats are stamped and aged by the server's clock.
    fn judges_by_participant_clock(&self) -> bool {
        false
    }
}

ledger_suite!(RemoteBackend::new());

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tom_dist_ledger::clock::ManualClock;
use tom_dist_ledger::ledger::{CallOptions, OperationCallback, OperationOptions};

/// Beats go to the server, which keeps them beside the document: the document is not
/// rewritten per beat (only copied into it every two seconds), and ages come from the
/// server's clock, so a participant whose own
/// clock is hours ahead neither looks stale nor finds others stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_are_kept_by_the_server_and_aged_by_its_clock() {
    let backend = RemoteBackend::new();
    ledger_suite::guarded(async {
        let beats = Arc::new(AtomicUsize::new(0));
        let counted = beats.clone();
        let fast = |c: Connect| c.heartbeat_interval(Duration::from_millis(50));
        let cli = ledger_suite::connect_with(&backend, "cli", fast).await;
        let op = cli
            .create_operation(OperationOptions::new().callback(
                OperationCallback::new().on_heartbeat_success(move |_, _| {
                    counted.fetch_add(1, Ordering::Relaxed);
                }),
            ))
            .await
            .unwrap();
        let skewed_clock = ManualClock::starting_now();
        skewed_clock.advance(Duration::from_secs(3 * 3600));
        let skewed =
            ledger_suite::connect_with(&backend, "skewed", |c| fast(c).clock(skewed_clock.clone()))
                .await;
        let joined = skewed
            .join_operation(op.operation_id(), OperationOptions::new())
            .await
            .unwrap();
        let store = cli.store().clone();
        let id = op.operation_id().clone();
        let seq = store.read(&id).await.unwrap().seq;
        let seen = beats.load(Ordering::Relaxed);
        let since = Instant::now();
        ledger_suite::wait_until("forty more beats", || {
            let beats = beats.clone();
            async move { beats.load(Ordering::Relaxed) >= seen + 40 }
        })
        .await;
        // The server copies beats into the document every two seconds at most, not per
        // beat (two participants beat here every 50 ms).
        let writes = store.read(&id).await.unwrap().seq - seq;
        let windows = since.elapsed().as_secs() / 2 + 2;
        assert!(
            writes <= windows,
            "{writes} writes in {:?}",
            since.elapsed()
        );
        for (who, result) in [
            ("cli", op.heartbeat().await.unwrap()),
            ("skewed", joined.heartbeat().await.unwrap()),
        ] {
            assert!(result.stale_participants.is_empty(), "{who}: {result:?}");
            for (p, age) in &result.participant_heartbeat_ages {
                assert!(*age < 10_000, "{who} sees {p} {age} ms old");
            }
        }
        joined.leave(false).await.unwrap();
        op.complete().await.unwrap();
        skewed.dispose().await;
    })
    .await;
}

/// A participant whose beats stop (alive, but silent: hung) is expired by the server,
/// which pushes it on the event stream: the operation fails within the stale threshold
/// plus a second, without waiting for the initiator's next beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_beats_stop_is_expired_by_the_server() {
    let backend = RemoteBackend::new();
    ledger_suite::guarded(async {
        let stale = Duration::from_secs(2);
        // The initiator beats once an hour: only the server's push can tell it in time.
        let cli = ledger_suite::connect_with(&backend, "cli", |c| {
            c.heartbeat_interval(Duration::from_secs(3600))
                .stale_threshold(stale)
        })
        .await;
        let op = cli.create_operation(OperationOptions::new()).await.unwrap();
        let silent = ledger_suite::connect_with(&backend, "silent", |c| {
            c.heartbeat_interval(Duration::from_secs(3600))
        })
        .await;
        let joined = silent
            .join_operation(op.operation_id(), OperationOptions::new())
            .await
            .unwrap();
        let _call = joined.start_call::<()>(CallOptions::new()).await.unwrap();
        let since = Instant::now();
        let info = tokio::time::timeout(Duration::from_secs(30), op.failed())
            .await
            .expect("failed() fires");
        let after = since.elapsed();
        assert!(
            after < stale + Duration::from_secs(3),
            "expired after {after:?}"
        );
        let reason = info.reason.unwrap_or_default();
        assert!(
            reason.contains("participant `silent` crashed"),
            "the reason names the participant: {reason}"
        );
        silent.dispose().await;
        cli.dispose().await;
    })
    .await;
}
