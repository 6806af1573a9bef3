use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Scripted workers: each attempt's status is given up front; the fake records the order
/// of starts and the most workers running at once.
struct Fake {
    script: Vec<Vec<Status>>,
    log: Arc<Mutex<Vec<String>>>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    /// Workers that never end on their own (until stopped).
    hang: Vec<usize>,
}

impl Fake {
    fn new(script: Vec<Vec<Status>>) -> Self {
        Self {
            script,
            log: Arc::default(),
            running: Arc::default(),
            most: Arc::default(),
            hang: Vec::new(),
        }
    }

    fn start(&self, i: usize, attempt: u32) -> Started {
        self.log
            .lock()
            .unwrap()
            .push(format!("start {i}#{attempt}"));
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let status = self.script[i]
            .get(attempt as usize - 1)
            .copied()
            .unwrap_or(Status::Ok);
        let hang = self.hang.contains(&i);
        let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<StopMode>();
        let running = self.running.clone();
        let log = self.log.clone();
        let outcome = Box::pin(async move {
            let status = if hang {
                match stop_rx.recv().await {
                    Some(StopMode::Graceful(r)) => r.status(),
                    _ => Status::Cancelled,
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => status,
                    Some(m) = stop_rx.recv() => match m {
                        StopMode::Graceful(r) => r.status(),
                        StopMode::Kill => Status::Cancelled,
                    },
                }
            };
            running.fetch_sub(1, Ordering::SeqCst);
            log.lock()
                .unwrap()
                .push(format!("end {i} {}", status.as_str()));
            status
        });
        Started {
            outcome,
            stop: Box::new(move |m| {
                let _ = stop_tx.send(m);
            }),
        }
    }
}

fn nodes(after: &[&[usize]]) -> Vec<Node> {
    after
        .iter()
        .map(|a| Node {
            after: a.to_vec(),
            retries: 0,
            fatal: true,
        })
        .collect()
}

async fn run(schedule: Schedule, fake: &Fake) -> Report {
    let (_tx, mut rx) = mpsc::unbounded_channel();
    tokio::time::timeout(
        Duration::from_secs(20),
        schedule.run(|i, a| fake.start(i, a), &mut rx),
    )
    .await
    .expect("schedule hung")
}

fn ok(attempts: u32) -> Final {
    Final::Done {
        status: Status::Ok,
        attempts,
    }
}

fn position(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|l| l == entry)
        .unwrap_or_else(|| panic!("no `{entry}` in {log:?}"))
}

#[tokio::test]
async fn after_orders_starts() {
    // 0 <- 1 <- 2, and 3 independent.
    let fake = Fake::new(vec![vec![]; 4]);
    let schedule = Schedule {
        nodes: nodes(&[&[], &[0], &[1], &[]]),
        jobs: 4,
        keep_going: false,
    };
    let report = run(schedule, &fake).await;
    assert_eq!(report.finals, vec![ok(1); 4]);
    assert!(!report.failed);
    let log = fake.log.lock().unwrap().clone();
    assert!(
        position(&log, "end 0 ok") < position(&log, "start 1#1"),
        "{log:?}"
    );
    assert!(
        position(&log, "end 1 ok") < position(&log, "start 2#1"),
        "{log:?}"
    );
    assert!(
        position(&log, "start 3#1") < position(&log, "end 0 ok"),
        "{log:?}"
    );
}

#[tokio::test]
async fn jobs_limit_is_respected_and_reached() {
    let fake = Fake::new(vec![vec![]; 9]);
    let schedule = Schedule {
        nodes: nodes(&[&[] as &[usize]; 9]),
        jobs: 3,
        keep_going: false,
    };
    let report = run(schedule, &fake).await;
    assert_eq!(report.finals, vec![ok(1); 9]);
    assert_eq!(fake.most.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn failure_stops_the_others_by_default() {
    // 0 fails; 1 hangs until stopped; 2 waits on 0; 3 is queued behind the job limit.
    let mut fake = Fake::new(vec![vec![Status::Failed], vec![], vec![], vec![]]);
    fake.hang = vec![1];
    let schedule = Schedule {
        nodes: nodes(&[&[], &[], &[0], &[]]),
        jobs: 2,
        keep_going: false,
    };
    let report = run(schedule, &fake).await;
    assert!(report.failed);
    assert_eq!(
        report.finals,
        vec![
            Final::Done {
                status: Status::Failed,
                attempts: 1
            },
            Final::Done {
                status: Status::Cancelled,
                attempts: 1
            },
            Final::Skipped,
            Final::Skipped,
        ]
    );
}

#[tokio::test]
async fn keep_going_skips_only_dependents() {
    // 0 fails; 1 depends on 0, 2 on 1; 3 and 4 are independent, 4 after 3.
    let fake = Fake::new(vec![vec![Status::Failed], vec![], vec![], vec![], vec![]]);
    let schedule = Schedule {
        nodes: nodes(&[&[], &[0], &[1], &[], &[3]]),
        jobs: 1,
        keep_going: true,
    };
    let report = run(schedule, &fake).await;
    assert!(report.failed);
    let failed = Final::Done {
        status: Status::Failed,
        attempts: 1,
    };
    assert_eq!(
        report.finals,
        vec![failed, Final::Skipped, Final::Skipped, ok(1), ok(1)]
    );
}

#[tokio::test]
async fn retries_until_success_or_exhausted() {
    let fake = Fake::new(vec![
        vec![Status::Failed, Status::Timeout, Status::Ok],
        vec![Status::Failed, Status::Failed],
    ]);
    let mut n = nodes(&[&[], &[]]);
    n[0].retries = 2;
    n[1].retries = 1;
    let schedule = Schedule {
        nodes: n,
        jobs: 1,
        keep_going: true,
    };
    let report = run(schedule, &fake).await;
    assert_eq!(report.finals[0], ok(3));
    assert_eq!(
        report.finals[1],
        Final::Done {
            status: Status::Failed,
            attempts: 2
        }
    );
    assert!(report.failed);
}

#[tokio::test]
async fn tolerated_failure_lets_dependents_run() {
    let fake = Fake::new(vec![vec![Status::Failed], vec![]]);
    let mut n = nodes(&[&[], &[0]]);
    n[0].fatal = false;
    let schedule = Schedule {
        nodes: n,
        jobs: 2,
        keep_going: false,
    };
    let report = run(schedule, &fake).await;
    assert!(!report.failed);
    assert_eq!(report.finals[1], ok(1));
}

#[tokio::test]
async fn interrupt_stops_everything_and_starts_nothing() {
    let mut fake = Fake::new(vec![vec![]; 3]);
    fake.hang = vec![0, 1];
    let schedule = Schedule {
        nodes: nodes(&[&[], &[], &[]]),
        jobs: 2,
        keep_going: false,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    tx.send(Interrupt::Stop(StopReason::Timeout)).unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        schedule.run(|i, a| fake.start(i, a), &mut rx),
    )
    .await
    .expect("schedule hung");
    assert_eq!(
        report.interrupted,
        Some(Interrupt::Stop(StopReason::Timeout))
    );
    let timeout = Final::Done {
        status: Status::Timeout,
        attempts: 1,
    };
    assert_eq!(report.finals, vec![timeout, timeout, Final::Skipped]);
}
