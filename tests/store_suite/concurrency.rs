//! Behaviours under concurrent writers.

use std::collections::BTreeSet;

use tom_dist_ledger::Error;
use tom_dist_ledger::model::TempResource;

use super::{TestLedger, frame, op, participant, sample, t0};

const TASKS: usize = 8;
const UPDATES: usize = 200;

/// 200 read-change-writes from 8 tasks, half on their own handle and half on a shared one:
/// every update lands exactly once.
pub async fn concurrent_modifies_lose_no_update(ledger: &TestLedger) {
    let shared = ledger.open();
    let id = op("op_concurrent");
    let mut data = sample("op_concurrent");
    data.temp_resources.clear();
    shared.create(&data).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = if task % 2 == 0 {
            ledger.open()
        } else {
            shared.clone()
        };
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for n in (task..UPDATES).step_by(TASKS) {
                store
                    .modify(&id, &mut |d| {
                        d.temp_resources.push(TempResource {
                            path: format!("/tmp/update-{n}"),
                            owner: task as i64,
                            registered_at: t0(),
                            owner_id: None,
                        });
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = shared.read(&id).await.unwrap();
    assert_eq!(last.seq, data.seq + UPDATES as u64);
    let paths: BTreeSet<String> = last.temp_resources.into_iter().map(|r| r.path).collect();
    let expected: BTreeSet<String> = (0..UPDATES).map(|n| format!("/tmp/update-{n}")).collect();
    assert_eq!(paths, expected);
}

/// A handle whose last view of the operation is old: a change refused on that view runs
/// again on the current data (and succeeds), and a change it makes keeps what another
/// handle wrote meanwhile.
pub async fn a_change_is_decided_on_the_current_data(ledger: &TestLedger) {
    let (a, b) = (ledger.open(), ledger.open());
    let mut data = sample("op_current_data");
    data.call_frames.clear();
    let id = &data.operation_id;
    a.create(&data).await.unwrap();
    a.modify(id, &mut |d| {
        d.description = Some("seen by a".into());
        Ok(())
    })
    .await
    .unwrap();
    let call = "call_b_1_aaaa";
    b.modify(id, &mut |d| {
        d.call_frames.push(frame(&participant("b"), call));
        Ok(())
    })
    .await
    .unwrap();
    // Refused on a's old view (no such frame), made on the current data.
    let ended = a
        .modify(id, &mut |d| {
            let before = d.call_frames.len();
            d.call_frames.retain(|f| f.call_id.as_str() != call);
            if d.call_frames.len() == before {
                return Err(Error::invalid("call", "not in the operation"));
            }
            Ok(())
        })
        .await
        .expect("the change is decided on the current data");
    assert!(ended.call_frames.is_empty());
    b.modify(id, &mut |d| {
        d.aborted = true;
        Ok(())
    })
    .await
    .unwrap();
    // Made on a's old view first, written on the current data: b's write is kept.
    let written = a
        .modify(id, &mut |d| {
            d.description = Some("changed by a".into());
            Ok(())
        })
        .await
        .unwrap();
    assert!(written.aborted, "b's write is kept");
    assert_eq!(a.read(id).await.unwrap(), written);
    assert_eq!(b.read(id).await.unwrap(), written);
    // Refused on the current data too: the error, nothing written.
    let err = a
        .modify(id, &mut |_| {
            Err(Error::invalid("change", "refused on purpose"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_eq!(b.read(id).await.unwrap(), written);
}
