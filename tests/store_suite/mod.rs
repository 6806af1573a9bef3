//! The behavioural suite every `Store` backend must pass, written once against the trait.
//!
//! Each behaviour is an async fn taking a [`TestLedger`]: a fresh, empty ledger of one
//! backend that hands out as many handles on it as a test wants (each handle stands for
//! another process). A backend's test file runs them all with one line:
//!
//! ```ignore
//! #[macro_use]
//! mod store_suite;
//! store_suite!(my_backend_ledger); // async fn my_backend_ledger() -> TestLedger
//! ```

#![allow(dead_code)]

mod behaviours;
mod concurrency;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tom_dist_ledger::clock::Timestamp;
use tom_dist_ledger::ids::{CallId, OperationId, ParticipantId};
use tom_dist_ledger::model::{CallFrame, FrameState, LedgerData, TempResource, time};
use tom_dist_ledger::store::Store;

// Unused in test files that take only the helpers.
#[allow(unused_imports)]
pub use behaviours::*;
#[allow(unused_imports)]
pub use concurrency::*;

/// How long a test waits for something that should happen within milliseconds: generous,
/// because CI runs on two loaded cores.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A fresh ledger of one backend, and what keeps it alive (a temp dir, a server).
pub struct TestLedger {
    open: Box<dyn Fn() -> Arc<dyn Store> + Send + Sync>,
    _keep: Box<dyn Any + Send + Sync>,
}

impl TestLedger {
    /// `open` returns a new handle on the same ledger each time it is called.
    pub fn new(
        keep: impl Any + Send + Sync,
        open: impl Fn() -> Arc<dyn Store> + Send + Sync + 'static,
    ) -> Self {
        Self {
            open: Box::new(open),
            _keep: Box::new(keep),
        }
    }

    /// A new handle, as another process would hold.
    pub fn open(&self) -> Arc<dyn Store> {
        (self.open)()
    }
}

/// Instantiate every behaviour as a `#[tokio::test]` for the backend made by `$factory`
/// (an `async fn() -> TestLedger`).
#[macro_export]
macro_rules! store_suite {
    ($factory:path) => {
        $crate::store_suite!(@each $factory;
            create_then_read_round_trips,
            create_twice_is_refused,
            unknown_operation_is_not_found,
            modify_bumps_seq_and_returns_written_data,
            failed_change_writes_nothing,
            change_cannot_rename_the_operation,
            list_and_list_archived_are_sorted,
            archive_moves_the_operation,
            logs_append_and_read_from_cursors,
            log_lines_stay_whole_lines,
            read_log_continues_into_the_archive,
            watch_fires_on_modify_by_another_handle,
            watch_fires_on_archive,
            watch_ends_visibly_when_the_store_is_dropped,
            read_gives_the_revision_and_modify_moves_it,
            compare_and_swap_replaces_only_the_revision_it_names,
            list_summaries_lists_live_then_archived,
            archive_names_the_operation,
            concurrent_modifies_lose_no_update,
            a_change_is_decided_on_the_current_data,
            modify_logged_writes_its_lines_with_the_change,
        );
    };
    (@each $factory:path; $($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() {
                let ledger = $factory().await;
                $crate::store_suite::$behaviour(&ledger).await;
            }
        )*
    };
}

/// A fixed time with millisecond precision, which every backend stores exactly.
pub fn t0() -> Timestamp {
    time::parse("2026-03-01T10:00:00.250Z").expect("valid timestamp")
}

pub fn op(id: &str) -> OperationId {
    OperationId::parse(id).expect("valid operation id")
}

pub fn participant(id: &str) -> ParticipantId {
    ParticipantId::parse(id).expect("valid participant id")
}

/// An operation with something in every list, so round trips cover the whole schema.
pub fn sample(id: &str) -> LedgerData {
    let cli = participant("cli");
    let mut data = LedgerData::new(op(id), cli.clone(), t0());
    data.description = Some("build the docs".into());
    data.call_frames.push(frame(&cli, "call_cli_1_abcd"));
    data.temp_resources.push(TempResource {
        path: "/tmp/work.tmp".into(),
        owner: 4242,
        registered_at: t0(),
        owner_id: Some(cli),
    });
    data
}

pub fn frame(p: &ParticipantId, call: &str) -> CallFrame {
    CallFrame {
        participant_id: p.clone(),
        call_id: CallId::parse(call).expect("valid call id"),
        pid: 4242,
        start_time: t0(),
        last_heartbeat: t0(),
        state: FrameState::Active,
        description: Some("compile".into()),
        resources: vec![],
        fail_on_crash: true,
        session_id: Some(1),
        parent_call_id: None,
        process: None,
    }
}
