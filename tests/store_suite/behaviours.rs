//! Single-handle behaviours: what each trait method promises.

use tom_dist_ledger::Error;
use tom_dist_ledger::model::OperationState;
use tom_dist_ledger::store::{
    ChangeKind, ChangeStream, LogCursor, LogKind, OperationChange, Revision, WriteKind,
};

use super::{PATIENCE, TestLedger, frame, op, participant, sample};

pub async fn create_then_read_round_trips(ledger: &TestLedger) {
    let store = ledger.open();
    let data = sample("op_round_trip");
    store.create(&data).await.unwrap();
    assert_eq!(store.read(&data.operation_id).await.unwrap(), data);
    // Another handle sees the same.
    assert_eq!(ledger.open().read(&data.operation_id).await.unwrap(), data);
}

pub async fn create_twice_is_refused(ledger: &TestLedger) {
    let store = ledger.open();
    let first = sample("op_twice");
    store.create(&first).await.unwrap();
    let mut second = sample("op_twice");
    second.description = Some("another".into());
    let err = store.create(&second).await.unwrap_err();
    assert!(
        matches!(err, Error::OperationExists(ref o) if o == &first.operation_id),
        "{err}"
    );
    assert_eq!(store.read(&first.operation_id).await.unwrap(), first);
}

pub async fn unknown_operation_is_not_found(ledger: &TestLedger) {
    let store = ledger.open();
    let unknown = op("op_unknown");
    let not_found = |r: Result<(), Error>| match r {
        Err(Error::OperationNotFound(o)) => assert_eq!(o, unknown),
        other => panic!("expected not found, got {other:?}"),
    };
    not_found(store.read(&unknown).await.map(drop));
    not_found(store.modify(&unknown, &mut |_| Ok(())).await.map(drop));
    not_found(store.read_archived(&unknown).await.map(drop));
    not_found(store.archive(&unknown).await.map(drop));
    not_found(
        store
            .read_log(&unknown, LogKind::Main, LogCursor::START)
            .await
            .map(drop),
    );
    not_found(store.append_log(&unknown, LogKind::Main, "x").await);
    // None of that brought the operation into being.
    assert!(store.list().await.unwrap().is_empty());
    assert!(store.list_archived().await.unwrap().is_empty());
}

pub async fn modify_bumps_seq_and_returns_written_data(ledger: &TestLedger) {
    let store = ledger.open();
    let data = sample("op_modify");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let before = store.read(id).await.unwrap();
    let written = store
        .modify(id, &mut |d| {
            d.aborted = true;
            d.call_frames
                .push(frame(&participant("worker-1"), "call_worker-1_1_0001"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(written.seq, before.seq + 1);
    assert!(written.aborted);
    assert_eq!(written.call_frames.len(), 2);
    assert_eq!(store.read(id).await.unwrap(), written);
    let again = store.modify(id, &mut |_| Ok(())).await.unwrap();
    assert_eq!(again.seq, before.seq + 2);
}

pub async fn failed_change_writes_nothing(ledger: &TestLedger) {
    let store = ledger.open();
    let data = sample("op_failed_change");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let err = store
        .modify(id, &mut |d| {
            d.operation_state = OperationState::Failed;
            d.call_frames.clear();
            Err(Error::invalid("change", "refused on purpose"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_eq!(store.read(id).await.unwrap(), data);
}

pub async fn change_cannot_rename_the_operation(ledger: &TestLedger) {
    let store = ledger.open();
    let data = sample("op_keep_name");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let written = store
        .modify(id, &mut |d| {
            d.operation_id = op("op_other_name");
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(&written.operation_id, id);
    assert_eq!(store.list().await.unwrap(), vec![id.clone()]);
}

pub async fn list_and_list_archived_are_sorted(ledger: &TestLedger) {
    let store = ledger.open();
    for id in ["op_c", "op_a", "op_e", "op_b", "op_d"] {
        store.create(&sample(id)).await.unwrap();
    }
    let ids = |v: &[&str]| v.iter().map(|s| op(s)).collect::<Vec<_>>();
    assert_eq!(
        store.list().await.unwrap(),
        ids(&["op_a", "op_b", "op_c", "op_d", "op_e"])
    );
    for id in ["op_d", "op_b"] {
        store.archive(&op(id)).await.unwrap();
    }
    assert_eq!(store.list().await.unwrap(), ids(&["op_a", "op_c", "op_e"]));
    assert_eq!(store.list_archived().await.unwrap(), ids(&["op_b", "op_d"]));
}

pub async fn archive_moves_the_operation(ledger: &TestLedger) {
    let store = ledger.open();
    let data = sample("op_archive");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    store.append_log(id, LogKind::Main, "first").await.unwrap();
    store
        .append_log(id, LogKind::Debug, "debug first")
        .await
        .unwrap();
    let last = store
        .modify(id, &mut |d| {
            d.operation_state = OperationState::Completed;
            Ok(())
        })
        .await
        .unwrap();
    let location = store.archive(id).await.unwrap();
    assert!(!location.location().is_empty());

    assert!(matches!(
        store.read(id).await,
        Err(Error::OperationNotFound(_))
    ));
    assert!(matches!(
        store.modify(id, &mut |_| Ok(())).await,
        Err(Error::OperationNotFound(_))
    ));
    assert_eq!(store.read_archived(id).await.unwrap(), last);
    assert!(!store.list().await.unwrap().contains(id));
    assert_eq!(store.list_archived().await.unwrap(), vec![id.clone()]);
    let (main, _) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(main, "first\n");
    let (debug, _) = store
        .read_log(id, LogKind::Debug, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(debug, "debug first\n");
    // An archived id is taken for good, and cannot be archived again.
    assert!(matches!(
        store.create(&data).await,
        Err(Error::OperationExists(_))
    ));
    assert!(matches!(
        store.archive(id).await,
        Err(Error::OperationNotFound(_))
    ));
}

pub async fn logs_append_and_read_from_cursors(ledger: &TestLedger) {
    let store = ledger.open();
    let id = &op("op_logs");
    store.create(&sample("op_logs")).await.unwrap();
    let (empty, start) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(empty, "");
    store.append_log(id, LogKind::Main, "one").await.unwrap();
    let (first, after_one) = store.read_log(id, LogKind::Main, start).await.unwrap();
    assert_eq!(first, "one\n");
    store.append_log(id, LogKind::Main, "two").await.unwrap();
    let (text, next) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(text, "one\ntwo\n");
    assert_eq!(
        store.read_log(id, LogKind::Main, next).await.unwrap(),
        (String::new(), next)
    );
    store.append_log(id, LogKind::Main, "three").await.unwrap();
    let (more, after) = store.read_log(id, LogKind::Main, next).await.unwrap();
    assert_eq!(more, "three\n");
    assert_ne!(after, next);
    // From the middle, by another handle.
    let (tail, _) = ledger
        .open()
        .read_log(id, LogKind::Main, after_one)
        .await
        .unwrap();
    assert_eq!(tail, "two\nthree\n");
    // The debug log is separate.
    assert_eq!(
        store
            .read_log(id, LogKind::Debug, LogCursor::START)
            .await
            .unwrap()
            .0,
        ""
    );
    store.append_log(id, LogKind::Debug, "dbg").await.unwrap();
    assert_eq!(
        store
            .read_log(id, LogKind::Debug, LogCursor::START)
            .await
            .unwrap()
            .0,
        "dbg\n"
    );
    assert_eq!(
        store
            .read_log(id, LogKind::Main, LogCursor::START)
            .await
            .unwrap()
            .1,
        after
    );
}

pub async fn log_lines_stay_whole_lines(ledger: &TestLedger) {
    let store = ledger.open();
    let id = &op("op_log_lines");
    store.create(&sample("op_log_lines")).await.unwrap();
    store
        .append_log(id, LogKind::Main, "error: first\nsecond\r\nthird")
        .await
        .unwrap();
    store.append_log(id, LogKind::Main, "next").await.unwrap();
    let (text, _) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(lines[0].starts_with("error: first") && lines[0].ends_with("third"));
    assert_eq!(lines[1], "next");
}

pub async fn read_log_continues_into_the_archive(ledger: &TestLedger) {
    let store = ledger.open();
    let id = &op("op_log_archive");
    store.create(&sample("op_log_archive")).await.unwrap();
    store.append_log(id, LogKind::Main, "live").await.unwrap();
    let (_, offset) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    store
        .append_log(id, LogKind::Main, "last words")
        .await
        .unwrap();
    store.archive(id).await.unwrap();
    let (rest, end) = store.read_log(id, LogKind::Main, offset).await.unwrap();
    assert_eq!(rest, "last words\n");
    assert_eq!(
        store.read_log(id, LogKind::Main, end).await.unwrap(),
        (String::new(), end)
    );
}

pub async fn watch_fires_on_modify_by_another_handle(ledger: &TestLedger) {
    let watcher = ledger.open();
    let writer = ledger.open();
    let id = &op("op_watch_modify");
    writer.create(&sample("op_watch_modify")).await.unwrap();
    let mut changes = watcher.watch(id).unwrap();
    let written = writer
        .modify(id, &mut |d| {
            d.aborted = true;
            Ok(())
        })
        .await
        .unwrap();
    let change = next_change(&mut changes).await;
    assert_ne!(change.kind, ChangeKind::Archived, "{change:?}");
    // A revision, where the backend gives one, is the one written or a later one.
    if let Some(revision) = change.revision {
        assert!(revision >= Revision::new(written.seq), "{change:?}");
    }
    assert!(watcher.read(id).await.unwrap().aborted);
}

pub async fn watch_fires_on_archive(ledger: &TestLedger) {
    let watcher = ledger.open();
    let writer = ledger.open();
    let id = &op("op_watch_archive");
    writer.create(&sample("op_watch_archive")).await.unwrap();
    let mut changes = watcher.watch(id).unwrap();
    writer.archive(id).await.unwrap();
    // The archive is reported as such (a resync may come first after lost events).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let change = tokio::time::timeout_at(deadline, changes.next())
            .await
            .expect("no archive notification within the patience bound")
            .expect("the watch ended instead of reporting the archive");
        if change.kind == ChangeKind::Archived {
            break;
        }
    }
    assert!(matches!(
        watcher.read(id).await,
        Err(Error::OperationNotFound(_))
    ));
}

/// The next change, within the patience bound.
async fn next_change(changes: &mut ChangeStream) -> OperationChange {
    tokio::time::timeout(PATIENCE, changes.next())
        .await
        .expect("no change notification within the patience bound")
        .expect("the watch ended instead of reporting the change")
}

pub async fn watch_ends_visibly_when_the_store_is_dropped(ledger: &TestLedger) {
    let writer = ledger.open();
    let id = &op("op_watch_end");
    writer.create(&sample("op_watch_end")).await.unwrap();
    let watcher = ledger.open();
    let mut changes = watcher.watch(id).unwrap();
    drop(watcher);
    drop(writer);
    // What stays of the ledger (another handle, a server) may still report changes,
    // but the stream of a dropped handle ends: `next` returns, it does not hang.
    let ended =
        tokio::time::timeout(PATIENCE, async { while changes.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the watch of a dropped store never ended");
    assert!(changes.is_ended());
}

pub async fn read_gives_the_revision_and_modify_moves_it(ledger: &TestLedger) {
    let store = ledger.open();
    let data = sample("op_revision");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let first = store.read_versioned(id).await.unwrap();
    assert_eq!(first.data, data);
    assert_eq!(first.revision, Revision::new(data.seq));
    let written = store.modify(id, &mut |_| Ok(())).await.unwrap();
    let second = ledger.open().read_versioned(id).await.unwrap();
    assert!(second.revision > first.revision);
    assert_eq!(second.revision, Revision::new(written.seq));
}

pub async fn compare_and_swap_replaces_only_the_revision_it_names(ledger: &TestLedger) {
    let store = ledger.open();
    let other = ledger.open();
    let data = sample("op_cas");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    let read = store.read_versioned(id).await.unwrap();

    // Another writer comes first.
    other
        .modify(id, &mut |d| {
            d.description = Some("the other writer".into());
            Ok(())
        })
        .await
        .unwrap();
    let mut mine = read.data.clone();
    mine.aborted = true;
    let err = store
        .compare_and_swap(id, read.revision, mine.clone(), WriteKind::Change)
        .await
        .unwrap_err();
    match &err {
        Error::Conflict {
            operation,
            expected,
            found,
        } => {
            assert_eq!(operation, id);
            assert_eq!(*expected, read.revision);
            assert!(*found > read.revision, "{err}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now = store.read_versioned(id).await.unwrap();
    assert!(!now.data.aborted, "a refused swap writes nothing");
    assert_eq!(now.data.description.as_deref(), Some("the other writer"));

    // Named with the current revision, the swap goes through.
    mine.description = now.data.description.clone();
    let swapped = store
        .compare_and_swap(id, now.revision, mine, WriteKind::Refresh)
        .await
        .unwrap();
    assert!(swapped.revision > now.revision);
    assert!(swapped.data.aborted);
    assert_eq!(Revision::new(swapped.data.seq), swapped.revision);
    assert_eq!(store.read_versioned(id).await.unwrap(), swapped);

    // A swap cannot rename the operation, and an unknown one is not found.
    let mut renamed = swapped.data.clone();
    renamed.operation_id = op("op_cas_renamed");
    let kept = store
        .compare_and_swap(id, swapped.revision, renamed, WriteKind::Change)
        .await
        .unwrap();
    assert_eq!(&kept.data.operation_id, id);
    let unknown = op("op_cas_unknown");
    assert!(matches!(
        store
            .compare_and_swap(&unknown, Revision::new(0), sample("op_cas_unknown"), WriteKind::Change)
            .await,
        Err(Error::OperationNotFound(ref o)) if o == &unknown
    ));
    assert_eq!(store.list().await.unwrap(), vec![id.clone()]);
}

pub async fn list_summaries_lists_live_then_archived(ledger: &TestLedger) {
    let store = ledger.open();
    for id in ["op_sum_b", "op_sum_a", "op_sum_c"] {
        store.create(&sample(id)).await.unwrap();
    }
    let written = store
        .modify(&op("op_sum_a"), &mut |d| {
            d.aborted = true;
            Ok(())
        })
        .await
        .unwrap();
    store.archive(&op("op_sum_c")).await.unwrap();
    let entries = ledger.open().list_summaries().await.unwrap();
    let listed: Vec<(String, bool)> = entries
        .iter()
        .map(|e| (e.operation_id.to_string(), e.archived))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("op_sum_a".to_string(), false),
            ("op_sum_b".to_string(), false),
            ("op_sum_c".to_string(), true),
        ]
    );
    let a = entries[0].summary.as_ref().unwrap();
    let sample = sample("op_sum_a");
    assert_eq!(a.operation_id, sample.operation_id);
    assert_eq!(a.initiator_id, sample.initiator_id);
    assert_eq!(a.start_time, sample.start_time);
    assert_eq!(a.state, sample.operation_state);
    assert_eq!(a.description, sample.description);
    assert!(a.aborted);
    assert_eq!(
        (a.participants, a.call_frames, a.temp_resources),
        (
            sample.participants.len(),
            sample.call_frames.len(),
            sample.temp_resources.len()
        )
    );
    assert_eq!(a.revision, Revision::new(written.seq));
    assert!(!a.archived);
    assert!(entries[2].summary.as_ref().unwrap().archived);
}

pub async fn archive_names_the_operation(ledger: &TestLedger) {
    let store = ledger.open();
    let id = &op("op_archive_ref");
    store.create(&sample("op_archive_ref")).await.unwrap();
    let archived = store.archive(id).await.unwrap();
    assert_eq!(archived.operation(), id);
    assert!(!archived.location().is_empty());
    assert_eq!(archived.to_string(), archived.location());
}

/// `modify_logged`: the lines follow the lines before them, in order, once the change is
/// written; a change that fails writes neither.
pub async fn modify_logged_writes_its_lines_with_the_change(ledger: &TestLedger) {
    let store = ledger.open();
    let data = sample("op_logged");
    let id = &data.operation_id;
    store.create(&data).await.unwrap();
    store.append_log(id, LogKind::Main, "before").await.unwrap();
    let lines = ["one", "two", "three"].map(String::from);
    let (written, logged) = store
        .modify_logged(
            id,
            &mut |d| {
                d.aborted = true;
                Ok(())
            },
            &lines,
        )
        .await
        .unwrap();
    logged.unwrap();
    assert!(written.aborted);
    assert_eq!(store.read(id).await.unwrap(), written);
    let (text, cursor) = store
        .read_log(id, LogKind::Main, LogCursor::START)
        .await
        .unwrap();
    assert_eq!(text, "before\none\ntwo\nthree\n");
    let err = store
        .modify_logged(
            id,
            &mut |_| Err(Error::invalid("change", "refused on purpose")),
            &["never".to_string()],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_eq!(store.read(id).await.unwrap(), written);
    store.append_log(id, LogKind::Main, "after").await.unwrap();
    let (text, _) = store.read_log(id, LogKind::Main, cursor).await.unwrap();
    assert_eq!(text, "after\n");
}
