//! Participants paused by job control (`pausedAt` in their record): peers do not judge
//! them by heartbeat age, a local one for as long as its process lives, a remote one
//! for at most `max_pause`.

use std::time::Duration;

use tom_dist_ledger::clock::{Clock, ManualClock, age_ms};
use tom_dist_ledger::ledger::OperationOptions;

use super::signals::join_as_remote;
use super::{Backend, connect_with, with_clock};

const MAX_PAUSE: Duration = Duration::from_secs(60);

pub async fn paused_remote_participant_is_excused_for_max_pause(b: &dyn Backend) {
    let clock = ManualClock::starting_now();
    let cli = connect_with(b, "cli", |c| {
        with_clock(clock.clone())(c)
            .heartbeat_interval(Duration::from_secs(3600))
            .max_pause(MAX_PAUSE)
    })
    .await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    let joined = join_as_remote(b, &clock, &cli, &op).await;
    let remote = joined.participant_id().clone();
    let paused_at = clock.now();
    cli.store()
        .modify(op.operation_id(), &mut |d| {
            d.participants
                .get_mut(&remote)
                .expect("registered")
                .paused_at = Some(paused_at);
            Ok(())
        })
        .await
        .unwrap();
    // Past the stale threshold, within the longest pause: excused.
    clock.advance(Duration::from_secs(16));
    assert!(op.heartbeat().await.unwrap().stale_participants.is_empty());
    clock.advance(MAX_PAUSE - Duration::from_secs(16));
    assert!(op.heartbeat().await.unwrap().stale_participants.is_empty());
    // Paused for longer than that: judged by heartbeat age again.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        op.heartbeat().await.unwrap().stale_participants,
        vec![remote]
    );
    op.complete().await.unwrap();
}

pub async fn paused_local_participant_is_judged_by_its_pid(b: &dyn Backend) {
    let clock = ManualClock::starting_now();
    let slow = |c: tom_dist_ledger::Connect| {
        c.heartbeat_interval(Duration::from_secs(3600))
            .max_pause(MAX_PAUSE)
    };
    let cli = connect_with(b, "cli", |c| slow(with_clock(clock.clone())(c))).await;
    let op = cli.create_operation(OperationOptions::new()).await.unwrap();
    // A participant on this machine (this very process, so its pid runs). It shares the
    // manual clock, so it must not judge the initiator itself: once the clock jumps, its
    // watch could declare the initiator stale before the initiator beats.
    let near = connect_with(b, "near", |c| {
        slow(with_clock(clock.clone())(c)).stale_threshold(Duration::from_secs(24 * 3600))
    })
    .await;
    let joined = near
        .join_operation(op.operation_id(), OperationOptions::new())
        .await
        .unwrap();
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
    // No longer paused: silence counts again.
    clock.advance(Duration::from_secs(16));
    assert_eq!(op.heartbeat().await.unwrap().stale_participants, vec![me]);
    joined.leave(false).await.unwrap();
    op.complete().await.unwrap();
}
