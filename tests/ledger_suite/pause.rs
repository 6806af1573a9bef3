//! Participants paused by job control (`pausedAt` in their record): peers do not judge
//! them by heartbeat age, a local one for as long as its process lives, a remote one
//! for at most `max_pause`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tom_dist_ledger::clock::{Clock, ManualClock, SystemClock, age_ms};
use tom_dist_ledger::ledger::OperationCallback;

use super::signals::join_as_remote;
use super::{
    Backend, connect_with, create_and_beat, join_and_beat, registered, wait_until, with_clock,
};

const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Judged by the backend's own time: silent past the stale threshold but paused for
/// less than the longest pause, the participant is excused; paused longer, it is stale.
pub async fn paused_remote_participant_is_excused_for_max_pause(b: &dyn Backend) {
    // Not shorter: on etcd the threshold is the initiator's lease TTL, and a lease of a
    // second can run out on a loaded machine (a false crash of the initiator).
    let stale = Duration::from_secs(3);
    let max_pause = Duration::from_secs(10);
    let cli = connect_with(b, "cli", |c| {
        c.heartbeat_interval(Duration::from_secs(3600))
            .stale_threshold(stale)
            .max_pause(max_pause)
    })
    .await;
    let op = create_and_beat(&cli, OperationCallback::new()).await;
    let joined = join_as_remote(b, Arc::new(SystemClock), &cli, &op).await;
    let remote = joined.participant_id().clone();
    // Taken before the pause is stamped: the time it measures is never less than the
    // pause's age.
    let paused_since = Instant::now();
    let paused_at = SystemClock.now();
    cli.store()
        .modify(op.operation_id(), &mut |d| {
            registered(d, &remote)?.paused_at = Some(paused_at);
            Ok(())
        })
        .await
        .unwrap();
    // Past the stale threshold, within the longest pause: excused.
    let stale_ms = stale.as_millis() as u64;
    let excused = Arc::new(Mutex::new(None));
    wait_until("the paused participant silent past the threshold", || {
        let (op, remote, excused) = (&op, remote.clone(), excused.clone());
        async move {
            let result = op.heartbeat().await.unwrap();
            let past = result.participant_heartbeat_ages[&remote] > stale_ms;
            if past {
                *excused.lock().unwrap() =
                    Some((result.stale_participants, paused_since.elapsed()));
            }
            past
        }
    })
    .await;
    let (stale_list, paused_for) = excused.lock().unwrap().take().expect("recorded");
    assert!(
        paused_for < max_pause,
        "paused {paused_for:?} before the check"
    );
    assert!(stale_list.is_empty(), "{stale_list:?}");
    // Paused for longer than that: judged by heartbeat age again.
    wait_until("the pause running out", || {
        let (op, remote) = (&op, remote.clone());
        async move { op.heartbeat().await.unwrap().stale_participants == vec![remote] }
    })
    .await;
    assert!(paused_since.elapsed() >= max_pause);
    op.complete().await.unwrap();
}

pub async fn paused_local_participant_is_judged_by_its_pid(b: &dyn Backend) {
    let clock = ManualClock::starting_now();
    let slow = |c: tom_dist_ledger::Connect| {
        c.heartbeat_interval(Duration::from_secs(3600))
            .max_pause(MAX_PAUSE)
    };
    let cli = connect_with(b, "cli", |c| slow(with_clock(clock.clone())(c))).await;
    let op = create_and_beat(&cli, OperationCallback::new()).await;
    // A participant on this machine (this very process, so its pid runs).
    let near = connect_with(b, "near", |c| slow(with_clock(clock.clone())(c))).await;
    let joined = join_and_beat(&near, op.operation_id()).await;
    near.set_paused(true).await.unwrap();
    let me = joined.participant_id().clone();
    let record = |data: &tom_dist_ledger::model::LedgerData| data.participants[&me].clone();
    let data = cli.store().read(op.operation_id()).await.unwrap();
    let paused_at = record(&data).paused_at.expect("pausedAt recorded");
    assert_eq!(age_ms(clock.now(), paused_at), 0);
    // Hours stopped, far past the stale threshold and the longest remote pause: its
    // process runs, so it is not stale.
    clock.advance(Duration::from_secs(3 * 3600));
    assert!(op.heartbeat().await.unwrap().stale_participants.is_empty());
    // Resumed: the pause is cleared and the resume is a fresh beat.
    near.set_paused(false).await.unwrap();
    let data = cli.store().read(op.operation_id()).await.unwrap();
    assert_eq!(record(&data).paused_at, None);
    assert_eq!(age_ms(clock.now(), record(&data).last_heartbeat), 0);
    // No longer paused: silence counts again (where the participants' clocks judge; on
    // a backend with its own clock, the participant's lease keeps it alive).
    clock.advance(Duration::from_secs(16));
    let stale = op.heartbeat().await.unwrap().stale_participants;
    if b.judges_by_participant_clock() {
        assert_eq!(stale, vec![me]);
    } else {
        assert!(stale.is_empty(), "{stale:?}");
    }
    joined.leave(false).await.unwrap();
    op.complete().await.unwrap();
}
