//! The behaviour of the ledger API, written once and run against every backend.
//!
//! A backend file (`tests/ledger_file.rs`, ...) calls `ledger_suite!(make_backend)`, which
//! instantiates every behaviour below as a test with a watchdog.

#![allow(dead_code)]

pub mod calls;
pub mod ending;
pub mod exec;
pub mod lifecycle;
pub mod outcomes;
pub mod panics;
pub mod pause;
pub mod signals;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tom_dist_ledger::clock::SharedClock;
use tom_dist_ledger::ids::OperationId;
use tom_dist_ledger::ids::ParticipantId;
use tom_dist_ledger::ledger::{Connect, Ledger, Operation, OperationCallback, OperationOptions};
use tom_dist_ledger::store::Store;

/// A fresh ledger that several participants can connect to.
pub trait Backend: Send + Sync {
    /// Connection settings for one participant.
    fn connect(&self, participant: &str) -> Connect;
    /// The variable and value through which other processes reach this ledger
    /// (`TOM_LEDGER_DIR`, `TOM_LEDGER_URL`); `None` for a ledger inside this process,
    /// on which the behaviours that need a shared ledger are not run (see the macro).
    fn shared_location(&self) -> Option<(&'static str, String)>;
    /// Whether the store can show who wrote a record (`Store::provenance`): automatic
    /// recovery acts only on records it proves to be this user's (a cluster such as etcd
    /// or a ledger server cannot, so their abandoned operations are left to `recover`).
    fn proves_provenance(&self) -> bool {
        true
    }
    /// Whether a participant's liveness is judged by heartbeat ages on the judging
    /// participant's clock (a manual clock moved past the threshold makes it stale), or
    /// by the backend's own clock (etcd: a participant whose lease etcd holds is alive;
    /// a server: ages by its clock), whatever the clocks of the participants say.
    fn judges_by_participant_clock(&self) -> bool {
        true
    }
}

/// Connect a participant with fast heartbeats (tests never wait for them).
pub async fn connect(backend: &dyn Backend, participant: &str) -> Ledger {
    connect_with(backend, participant, |c| c).await
}

pub async fn connect_with(
    backend: &dyn Backend,
    participant: &str,
    tweak: impl FnOnce(Connect) -> Connect,
) -> Ledger {
    let connect = backend
        .connect(participant)
        .participant(ParticipantId::parse(participant).expect("valid test id"))
        .cleanup_wait(Duration::from_secs(5));
    Ledger::connect(tweak(connect)).await.expect("connect")
}

pub fn with_clock(clock: SharedClock) -> impl FnOnce(Connect) -> Connect {
    move |c| c.clock(clock)
}

pub fn store_of(ledger: &Ledger) -> Arc<dyn Store> {
    ledger.store().clone()
}

/// Wait until `check` holds, polling; panics with `what` after a generous bound.
/// The registration of `me` in a change's view. A store may run a change first on the
/// last value it saw (which may predate `me`'s join) and runs it again on a fresh read
/// when it is refused, so a missing registration is a refusal, not a panic.
pub fn registered<'a>(
    data: &'a mut tom_dist_ledger::model::LedgerData,
    me: &ParticipantId,
) -> tom_dist_ledger::Result<&'a mut tom_dist_ledger::model::Participant> {
    data.participants.get_mut(me).ok_or_else(|| {
        tom_dist_ledger::Error::invalid(
            format!("participant `{me}`"),
            "not registered in this view",
        )
    })
}

pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Create an operation and wait for its first beat. That beat happens at once but on
/// another task: a test that moves a manual clock waits for it, so a late first beat never
/// judges the others' ages on the moved clock.
pub async fn create_and_beat(ledger: &Ledger, callback: OperationCallback) -> Operation {
    let (callback, beats) = counting_beats(callback);
    let op = ledger
        .create_operation(OperationOptions::new().callback(callback))
        .await
        .unwrap();
    first_beat(&beats).await;
    op
}

/// Join an operation and wait for its first beat (see [`create_and_beat`]).
pub async fn join_and_beat(ledger: &Ledger, op: &OperationId) -> Operation {
    let (callback, beats) = counting_beats(OperationCallback::new());
    let joined = ledger
        .join_operation(op, OperationOptions::new().callback(callback))
        .await
        .unwrap();
    first_beat(&beats).await;
    joined
}

fn counting_beats(callback: OperationCallback) -> (OperationCallback, Arc<AtomicUsize>) {
    let beats = Arc::new(AtomicUsize::new(0));
    let counter = beats.clone();
    let callback = callback.on_heartbeat_success(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (callback, beats)
}

async fn first_beat(beats: &Arc<AtomicUsize>) {
    wait_until("the first heartbeat", || {
        let beats = beats.clone();
        async move { beats.load(Ordering::SeqCst) >= 1 }
    })
    .await;
}

/// Run a behaviour with a watchdog so a hang fails the test instead of the run.
pub async fn guarded(fut: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test hung for 60 s");
}

/// Log lines of an operation (live or archived).
pub async fn log_of(ledger: &Ledger, op: &tom_dist_ledger::OperationId) -> String {
    ledger
        .store()
        .read_log(
            op,
            tom_dist_ledger::store::LogKind::Main,
            tom_dist_ledger::store::LogCursor::START,
        )
        .await
        .expect("log")
        .0
}

/// `ledger_suite!(make)` runs every behaviour on a backend that other processes can
/// share; `ledger_suite!(in_process: make)` on one that lives inside the test process,
/// where the behaviours that need a shared ledger are listed as ignored with that reason
/// (they show in the test output), not silently left out.
#[macro_export]
macro_rules! ledger_suite {
    ($make:expr) => {
        $crate::ledger_suite!(@every $make; tests);
    };
    (in_process: $make:expr) => {
        $crate::ledger_suite!(@every $make; needs_shared);
    };
    (@every $make:expr; $shared:ident) => {
        // Behaviours that need other processes to reach the same ledger.
        $crate::ledger_suite!(@$shared $make;
            exec::worker_gets_the_nested_environment
        );
        $crate::ledger_suite!(@tests $make;
            lifecycle::dispose_stops_heartbeats,
            signals::heartbeat_result_and_participants_without_calls,
            signals::stale_participant_detected,
            signals::stale_remote_participant_is_declared_crashed_and_fenced,
            pause::paused_remote_participant_is_excused_for_max_pause,
            pause::paused_local_participant_is_judged_by_its_pid,
            ending::connect_recovers_abandoned_operations_when_asked,
            lifecycle::create_registers_initiator,
            lifecycle::join_registers_a_second_participant,
            lifecycle::join_unknown_operation_fails,
            lifecycle::join_refuses_an_id_held_by_another_live_process,
            lifecycle::join_takes_over_an_id_whose_holder_is_dead,
            lifecycle::sessions_are_separate,
            lifecycle::complete_archives_with_state_completed,
            lifecycle::complete_refuses_non_initiator_and_open_calls,
            lifecycle::leave_checks_pending_calls,
            lifecycle::leave_twice_fails,
            lifecycle::logs_levels_and_debug_log,
            lifecycle::operation_state_get_and_set,
            lifecycle::temp_resources_register_and_unregister,
            lifecycle::list_operations_shows_live_and_archived,
            lifecycle::start_time_and_elapsed,
            calls::start_and_end_a_call,
            calls::call_end_twice_fails,
            calls::failed_call_with_fail_on_crash_fails_the_operation,
            calls::failed_call_without_fail_on_crash_is_contained,
            calls::dropped_call_is_failed_and_logged,
            calls::spawned_call_runs_and_returns,
            calls::spawned_call_failure_uses_fallback,
            calls::spawned_call_null_fallback_fails,
            calls::spawned_call_failure_fails_operation,
            calls::cancel_really_stops_the_work,
            calls::kill_without_process_returns_false,
            calls::sync_waits_for_all_and_reports,
            calls::sync_empty_returns_at_once_and_calls_on_completion,
            calls::sync_reports_operation_failure,
            calls::await_call_single,
            calls::wait_for_completion_paths,
            calls::leave_cancels_pending_when_asked,
            signals::abort_flag_set_clear_and_check,
            signals::trigger_abort_is_local_and_written,
            signals::abort_reaches_another_participant,
            signals::heartbeat_first_beat_is_immediate,
            signals::heartbeat_reports_abort_flag,
            signals::fenced_participant_writes_are_refused,
            signals::failure_deletes_temp_resources_and_archives,
            exec::stdio_worker_returns_json,
            exec::non_zero_exit_fails_with_code_and_stderr,
            exec::file_worker_reads_the_finished_file,
            exec::file_worker_without_file_fails_at_once,
            exec::timeout_stops_the_whole_tree,
            exec::cancel_runs_the_stop_ladder,
            exec::kill_signals_the_group,
            exec::missing_executable_is_a_spawn_error,
            exec::stderr_is_streamed_in_whole_lines,
            exec::server_request_times_out,
            exec::worker_failure_fails_the_operation,
            outcomes::join_gives_the_exit_status_typed,
            outcomes::join_gives_a_timeout_typed,
            outcomes::exit_status_worker_succeeds,
            outcomes::an_operation_is_read_from_outside,
            panics::panic_in_spawned_work_fails_the_call,
            panics::panic_in_spawned_work_with_fail_on_crash_fails_the_operation,
            panics::panic_in_on_completion_fails_the_call,
            panics::panic_in_on_cleanup_is_caught,
            panics::panicking_heartbeat_callback_does_not_stop_the_heartbeat,
            ending::complete_refuses_while_own_calls_run_and_cancels_when_asked,
            ending::complete_right_after_dropping_a_call,
            ending::forced_completion_cancels_every_participants_calls,
            ending::regular_call_cancelled_by_leave_runs_on_cleanup,
            ending::fenced_participant_cannot_log
        );
    };
    (@needs_shared $make:expr; $($group:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a ledger shared with other processes; this backend lives in the test process"]
            async fn $name() {
                let backend = $make;
                ledger_suite::guarded(ledger_suite::$group::$name(&backend)).await;
            }
        )*
    };
    (@tests $make:expr; $($group:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $make;
                ledger_suite::guarded(ledger_suite::$group::$name(&backend)).await;
            }
        )*
    };
}
