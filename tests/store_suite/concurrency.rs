//! Behaviours under concurrent writers.

use std::collections::BTreeSet;

use tom_dist_ledger::model::TempResource;

use super::{TestLedger, op, sample, t0};

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
