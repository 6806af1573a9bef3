//! Many spawns through `clone(CLONE_VM | CLONE_VFORK)`, successful, stopped or failed, with
//! every kind of standard stream, leave no descriptor open and no zombie behind. Alone in
//! its test binary, so no other test opens descriptors meanwhile.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::process::{BOUND, stat_field, state, wait_until};
use tokio::io::AsyncReadExt;
use tom_dist_ledger::Error;
use tom_dist_ledger::process::{StdioMode, WorkerCommand};

fn open_fds() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// Children of this process that have exited and wait to be reaped.
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| state(*pid) == Some('Z'))
        .filter(|pid| stat_field(*pid, 4).is_some_and(|ppid| ppid == me))
        .collect()
}

#[test]
fn many_spawns_leak_no_descriptor_and_no_zombie() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Warm up: the spawner thread, its stack, the runtime's own descriptors.
        let mut warm = WorkerCommand::new("echo")
            .stdout(StdioMode::Piped)
            .spawn()
            .expect("spawn");
        let mut out = Vec::new();
        let mut stdout = warm.take_stdout().expect("stdout");
        stdout.read_to_end(&mut out).await.expect("read");
        drop(stdout);
        assert!(warm.wait().await.expect("wait").success());
        let before = open_fds();
        let mut pids = Vec::new();
        let modes = [
            StdioMode::Null,
            StdioMode::Piped,
            StdioMode::Inherit,
            StdioMode::Stderr,
        ];
        for i in 0..200 {
            let mut worker = WorkerCommand::new("true")
                .stdin(modes[i % 4])
                .stdout(modes[(i + 1) % 4])
                .stderr(modes[(i + 2) % 4])
                .spawn()
                .expect("spawn");
            pids.push(worker.pid());
            if i % 3 == 0 {
                // Stopped rather than waited for: the ladder reaps it.
                worker.stop(Duration::from_secs(5)).await;
            } else {
                assert!(worker.wait().await.expect("wait").success());
            }
        }
        for _ in 0..50 {
            let spawned = WorkerCommand::new("/nonexistent/tdl")
                .stdout(StdioMode::Piped)
                .stderr(StdioMode::Stderr)
                .spawn();
            assert!(matches!(spawned, Err(Error::Spawn { .. })));
        }
        let after = open_fds();
        assert_eq!(before, after, "descriptors leaked");
        wait_until("no zombie child left", BOUND, || {
            zombie_children().is_empty()
        });
        let me = std::process::id().to_string();
        for pid in pids {
            let ours = stat_field(pid, 4).is_some_and(|ppid| ppid == me);
            assert!(!ours, "worker {pid} is still our child ({:?})", state(pid));
        }
    });
}
