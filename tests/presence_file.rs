//! Presence on the file store, with real processes: the roster announces joined peers,
//! watches local ones by pidfd and announces their exit, judges everyone by heartbeat age
//! with the one stale threshold, and leaves heartbeat-only views alone; the registration
//! keeps beating until it is told to stop.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::process::{BOUND, TestScope, wait_until_async};
use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::clock::{Clock, ManualClock, Timestamp};
use tom_dist_ledger::ids::{OperationId, ParticipantId};
use tom_dist_ledger::ledger::OperationOptions;
use tom_dist_ledger::model::{LedgerData, Participant, ParticipantState};
use tom_dist_ledger::presence::{
    BeatFuture, BeatSchedule, FilePresence, Presence, PresenceEvent, PresenceEvents, Registration,
};
use tom_dist_ledger::process::{ProcessIdentity, boot_id, hostname, pid_namespace};
use tom_dist_ledger::{Connect, Ledger};

const HANG: &str = env!("CARGO_BIN_EXE_worker-hang");
const THRESHOLD: Duration = Duration::from_secs(15);
const MAX_PAUSE: Duration = Duration::from_secs(3600);

fn id(s: &str) -> ParticipantId {
    ParticipantId::parse(s).unwrap()
}

fn operation(now: Timestamp) -> LedgerData {
    LedgerData::new(OperationId::parse("op-presence").unwrap(), id("me"), now)
}

/// A participant on this host, boot and PID namespace with `pid`'s identity.
fn local(identity: &ProcessIdentity, epoch: u64, now: Timestamp) -> Participant {
    Participant {
        pid: identity.pid,
        start_ticks: Some(identity.start_ticks),
        host: hostname(),
        boot_id: boot_id().map(str::to_owned),
        pid_namespace: pid_namespace(),
        uid: None,
        epoch,
        last_heartbeat: now,
        joined_at: now,
        state: ParticipantState::Active,
        spawned_by: None,
        paused_at: None,
    }
}

/// A participant on another machine: judged by heartbeat age only.
fn remote(epoch: u64, last_heartbeat: Timestamp) -> Participant {
    Participant {
        pid: 1,
        start_ticks: Some(1),
        host: "elsewhere.invalid".into(),
        boot_id: Some("another-boot".into()),
        pid_namespace: Some(1),
        uid: None,
        epoch,
        last_heartbeat,
        joined_at: last_heartbeat,
        state: ParticipantState::Active,
        spawned_by: None,
        paused_at: None,
    }
}

async fn next_event(events: &mut PresenceEvents) -> PresenceEvent {
    tokio::time::timeout(BOUND, events.recv())
        .await
        .expect("a presence event within the bound")
        .expect("the event stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_peer_is_announced_joined_and_expires_when_its_process_dies() {
    let scope = TestScope::new();
    let mut child = tokio::process::Command::new(HANG)
        .args(["--marker", &scope.marker])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    let pid = child.id().unwrap() as i32;
    let identity = ProcessIdentity::of(pid).unwrap();

    let clock = ManualClock::starting_now();
    let presence = FilePresence::new(THRESHOLD, MAX_PAUSE, clock.clone());
    let (mut roster, mut events) = presence.follow(id("me"));
    let mut data = operation(clock.now());
    data.participants.insert(
        id("me"),
        local(&ProcessIdentity::current().unwrap(), 1, clock.now()),
    );
    data.participants
        .insert(id("peer"), local(&identity, 2, clock.now()));
    assert!(roster.see(&data));
    assert_eq!(
        next_event(&mut events).await,
        PresenceEvent::Joined {
            participant: id("peer"),
            epoch: 2
        },
        "only the peer is announced, not this participant"
    );
    assert!(presence.participant_alive(&data.participants[&id("peer")]));

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        PresenceEvent::Expired {
            participant: id("peer"),
            epoch: 2,
            reason: format!("process {pid} exited"),
        }
    );
    assert!(!presence.participant_alive(&data.participants[&id("peer")]));
    // Seen again (its death not yet declared), the peer is neither re-announced nor
    // watched twice.
    assert!(!roster.see(&data));
    drop(roster);
    assert_eq!(
        tokio::time::timeout(BOUND, events.recv()).await.unwrap(),
        None,
        "the stream ends with its roster, with no event in between"
    );
    scope.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_changed_only_heartbeats_announces_nothing() {
    let clock = ManualClock::starting_now();
    let presence = FilePresence::new(THRESHOLD, MAX_PAUSE, clock.clone());
    let (mut roster, mut events) = presence.follow(id("me"));
    let mut data = operation(clock.now());
    data.participants.insert(id("far"), remote(1, clock.now()));
    assert!(roster.see(&data));
    assert!(matches!(
        next_event(&mut events).await,
        PresenceEvent::Joined { epoch: 1, .. }
    ));
    clock.advance(Duration::from_secs(1));
    data.participants
        .get_mut(&id("far"))
        .unwrap()
        .last_heartbeat = clock.now();
    data.last_heartbeat = clock.now();
    data.seq += 1;
    assert!(!roster.see(&data), "heartbeats alone are no news");
    // A re-registration (new epoch) is news again.
    data.participants.get_mut(&id("far")).unwrap().epoch = 3;
    assert!(roster.see(&data));
    assert_eq!(
        next_event(&mut events).await,
        PresenceEvent::Joined {
            participant: id("far"),
            epoch: 3
        },
        "the heartbeat-only view in between announced nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stale_threshold_judges_ages_liveness_and_expiry() {
    let clock = ManualClock::starting_now();
    let presence = FilePresence::new(THRESHOLD, MAX_PAUSE, clock.clone());
    let (mut roster, mut events) = presence.follow(id("me"));
    let mut data = operation(clock.now());
    data.participants.insert(id("far"), remote(1, clock.now()));
    let mut paused = remote(2, clock.now());
    paused.paused_at = Some(clock.now());
    data.participants.insert(id("paused"), paused);
    roster.see(&data);

    clock.advance(Duration::from_secs(10));
    let ages = presence.ages(&data, &id("me"));
    assert_eq!(ages.ages[&id("far")], 10_000);
    assert!(ages.stale.is_empty(), "10 s is within 15 s");
    assert!(presence.is_live(&data, &id("far")));

    presence.set_stale_threshold(Duration::from_secs(5));
    assert_eq!(presence.stale_threshold(), Duration::from_secs(5));
    let ages = presence.ages(&data, &id("me"));
    assert_eq!(
        ages.stale,
        vec![id("far")],
        "the lowered threshold judges the beat; the paused peer is excused"
    );
    assert!(
        !presence.is_live(&data, &id("far")),
        "and the liveness check, with the same threshold"
    );
    assert!(presence.is_live(&data, &id("paused")));

    // Past the longest excused pause, the paused peer is judged by its heartbeat again.
    clock.advance(MAX_PAUSE);
    let ages = presence.ages(&data, &id("me"));
    assert_eq!(ages.stale, vec![id("far"), id("paused")]);

    // Stale participants are announced as expired; one no longer active is not.
    data.participants.get_mut(&id("paused")).unwrap().state = ParticipantState::Crashed;
    while events.try_recv().is_ok() {}
    roster.expire_stale(&data, &ages.stale);
    assert_eq!(
        next_event(&mut events).await,
        PresenceEvent::Expired {
            participant: id("far"),
            epoch: 1,
            reason: "heartbeat stale".into(),
        }
    );
    assert!(
        events.try_recv().is_err(),
        "the crashed one is not announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operation_threshold_is_the_connection_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let ledger = Ledger::connect(
        Connect::local(dir.path())
            .heartbeat_interval(Duration::from_secs(3600))
            .stale_threshold(THRESHOLD)
            .clock(clock.clone()),
    )
    .await
    .unwrap();
    let op = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    assert_eq!(
        op.staleness_threshold(),
        THRESHOLD,
        "Connect's setter holds"
    );
    let mut data = op.cached_data().unwrap();
    data.participants.insert(id("far"), remote(5, clock.now()));
    clock.advance(Duration::from_secs(10));
    assert!(ledger.is_participant_alive(&data, &id("far")));
    op.set_staleness_threshold(Duration::from_secs(5));
    assert!(
        !ledger.is_participant_alive(&data, &id("far")),
        "the operation's setter changed the threshold every judgement uses"
    );
    let other = ledger
        .create_operation(OperationOptions::new())
        .await
        .unwrap();
    assert_eq!(other.staleness_threshold(), Duration::from_secs(5));
    op.complete().await.unwrap();
    other.complete().await.unwrap();
    ledger.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_beats_until_a_beat_says_stop_or_it_is_dropped() {
    let schedule = BeatSchedule {
        interval: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
    };
    let beats = Arc::new(AtomicU64::new(0));
    let counter = beats.clone();
    let registration = Registration::keep_alive(schedule, move || -> BeatFuture {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { n < 3 })
    });
    wait_until_async("the registration ends after its third beat", BOUND, || {
        registration.is_finished()
    })
    .await;
    assert_eq!(beats.load(Ordering::SeqCst), 3);

    let beats = Arc::new(AtomicU64::new(0));
    let counter = beats.clone();
    let registration = Registration::keep_alive(schedule, move || -> BeatFuture {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { true })
    });
    wait_until_async("a first beat at once", BOUND, || {
        beats.load(Ordering::SeqCst) >= 1
    })
    .await;
    let task = registration.stop().expect("the beating task");
    assert!(
        task.await.unwrap_err().is_cancelled(),
        "a stopped registration's task has ended: no beat can follow"
    );
}
