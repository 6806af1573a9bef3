//! The fallback escape-proof mode without cgroups: the supervisor becomes a child
//! subreaper and finds descendants through the parent-pid tree and the environment tag.
//! (Its own test binary: becoming a subreaper changes the whole process.)

mod common;

use std::time::Duration;

use common::process::{TestScope, alive, read_until_ready, state};
use tokio::io::{AsyncBufReadExt, BufReader};
use tom_dist_ledger::process::{EscapeProof, StdioMode, StopEnd, WorkerCommand};

const SETSID: &str = env!("CARGO_BIN_EXE_worker-setsid");

#[tokio::test]
async fn subreaper_mode_catches_setsid_grandchildren() {
    let scope = TestScope::new();
    // One worker keeps its escaped child; the other exits and orphans it to us.
    let mut kept = WorkerCommand::new(SETSID)
        .args(["--marker", &scope.marker])
        .stdout(StdioMode::Piped)
        .escape_mode(EscapeProof::Subreaper)
        .spawn()
        .expect("spawn");
    let mut orphaning = WorkerCommand::new(SETSID)
        .args(["--exit", "--marker", &scope.marker])
        .stdout(StdioMode::Piped)
        .escape_mode(EscapeProof::Subreaper)
        .spawn()
        .expect("spawn");
    assert_eq!(kept.info().cgroup, None);
    let mut out = BufReader::new(kept.take_stdout().expect("stdout")).lines();
    let escaped = read_until_ready(&mut out).await[0];
    let mut out = BufReader::new(orphaning.take_stdout().expect("stdout")).lines();
    let orphan = read_until_ready(&mut out).await[0];
    assert!(orphaning.wait().await.expect("wait").success());
    common::process::wait_until_async("orphan reparented to us", common::process::BOUND, || {
        common::process::stat_field(orphan, 4) == Some(std::process::id().to_string())
    })
    .await;

    let outcome = kept.stop(Duration::from_secs(10)).await;
    assert_eq!(outcome.end, StopEnd::Terminated);
    assert!(!alive(escaped));
    let outcome = orphaning.stop(Duration::from_secs(10)).await;
    assert_eq!(outcome.end, StopEnd::Terminated);
    assert!(!alive(orphan));
    // The orphan was our child: it was reaped, not left as a zombie.
    common::process::wait_until_async("orphan reaped", common::process::BOUND, || {
        state(orphan).is_none()
    })
    .await;
    scope.assert_clean();
}
