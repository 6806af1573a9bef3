//! Job control of `tom-ledger run`: Ctrl+Z (SIGTSTP to the supervisor's process group, as
//! a terminal sends it) stops the supervisor and every worker group; SIGCONT (`fg`)
//! resumes them all and the run completes. Time stopped counts against no timeout, and a
//! peer does not take the paused supervisor for a crashed one.

mod cli_common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cli_common::{Env, Live, Out, index_of, plan, wait_until, worker};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

const PEER: &str = env!("CARGO_BIN_EXE_worker-ledger-peer");

/// A `tom-ledger run` leading its own process group, killed if the test fails midway.
struct Supervisor {
    live: Option<Live>,
    pid: i32,
}

impl Supervisor {
    fn start(env: &Env, args: &[&str]) -> Supervisor {
        let mut cmd = env.cmd(args);
        cmd.process_group(0);
        let live = Live::start(cmd);
        let pid = live.child.id() as i32;
        Supervisor {
            live: Some(live),
            pid,
        }
    }

    fn live(&mut self) -> &mut Live {
        self.live.as_mut().expect("running")
    }

    /// What the terminal does on Ctrl+Z and `fg`: a signal to the foreground group.
    fn signal_group(&self, sig: Signal) {
        killpg(Pid::from_raw(self.pid), sig).expect("signal the supervisor's group");
    }

    /// The JSON event of the first stdout line containing `kind` (and `name`, if given).
    fn event(&mut self, kind: &str, name: Option<&str>) -> Value {
        let line = self.live().wait_for_line(kind, |l| {
            l.contains(&format!("\"event\":\"{kind}\""))
                && name.is_none_or(|n| l.contains(&format!("\"name\":\"{n}\"")))
        });
        serde_json::from_str(&line).expect("JSON event")
    }

    fn finish(mut self) -> Out {
        self.live.take().expect("running").finish()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut live) = self.live.take() {
            let _ = live.child.kill();
            let _ = live.child.wait();
        }
    }
}

/// A peer process of the test, killed and reaped when the test ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state letter of `/proc/PID/stat` (`T` when stopped).
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn ticks(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A worker that prints a line every few milliseconds to `$D/{name}.ticks` until
/// `$D/stop` exists.
fn ticker(env: &Env, name: &str, extra: &str) -> String {
    let script = format!("exec worker-ticker $D/stop --marker $0 > $D/{name}.ticks");
    worker(env, name, &script, extra)
}

/// This participant's record in the live operation file.
fn participant(env: &Env, op: &str, participant: &str) -> Value {
    let path = env.ledger.join(format!("{op}.operation.json"));
    let text = std::fs::read_to_string(&path).expect("operation file");
    let data: Value = serde_json::from_str(&text).expect("operation JSON");
    data["participants"][participant].clone()
}

#[test]
fn ctrl_z_stops_the_supervisor_and_every_worker_and_fg_resumes_them() {
    let env = Env::new();
    // `nested` runs its ticker through `tom-ledger exec`, in a group of exec's own.
    let nested = worker(
        &env,
        "nested",
        "tom-ledger exec -- sh -c 'exec worker-ticker $D/stop --marker $0 > $D/c.ticks' $0",
        "",
    );
    let p = plan(
        &env,
        &[ticker(&env, "a", ""), ticker(&env, "b", ""), nested],
    );
    let mut sup = Supervisor::start(&env, &["--json", "run", "-j", "3", "--plan", &p]);
    let started = sup.event("operation_started", None);
    let (op, me) = (
        started["operation"].as_str().expect("op").to_string(),
        started["participant"].as_str().expect("me").to_string(),
    );
    let workers: Vec<i32> = ["a", "b", "nested"]
        .iter()
        .map(|n| {
            sup.event("worker_started", Some(n))["pid"]
                .as_i64()
                .expect("pid") as i32
        })
        .collect();
    let files = ["a", "b", "c"].map(|n| env.path(&format!("{n}.ticks")));
    let counts = || files.clone().map(|f| ticks(&f));
    wait_until("every worker to tick", || counts().iter().all(|&n| n >= 3));

    sup.signal_group(Signal::SIGTSTP);
    // Every process of the run: the supervisor, its workers, the nested `exec` and the
    // ticker in exec's own group.
    wait_until(
        "the supervisor and every worker process to be stopped",
        || {
            let all = env.leftovers();
            state(sup.pid) == Some('T')
                && workers.iter().all(|&w| state(w) == Some('T'))
                && all.len() >= 4
                && all.iter().all(|&p| state(p) == Some('T'))
        },
    );
    assert!(
        participant(&env, &op, &me)["pausedAt"].is_string(),
        "the pause is not recorded: {}",
        participant(&env, &op, &me)
    );
    let before = counts();
    // Fifty tick intervals: a worker that still ran would have printed by now.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(counts(), before, "output grew while stopped");

    sup.signal_group(Signal::SIGCONT);
    wait_until("every worker to tick again", || {
        counts().iter().zip(&before).all(|(now, then)| now > then)
    });
    assert_ne!(state(sup.pid), Some('T'), "the supervisor is still stopped");
    wait_until("the resume to be recorded", || {
        participant(&env, &op, &me).get("pausedAt").is_none()
    });
    std::fs::write(env.path("stop"), b"").expect("stop file");
    let out = sup.finish();
    out.expect_code(0);
    let events = out.json();
    for name in ["a", "b", "nested"] {
        assert_eq!(
            events[index_of(&events, "worker_finished", name)]["status"],
            "ok"
        );
    }
    assert_eq!(events.last().expect("events")["state"], "completed");
    env.assert_no_leftovers();
}

#[test]
fn time_stopped_counts_against_no_timeout_and_peers_wait_for_the_paused_supervisor() {
    let env = Env::new();
    let p = plan(&env, &[ticker(&env, "slow", "timeout = \"6s\"")]);
    let mut sup = Supervisor::start(&env, &["--json", "run", "--timeout", "7s", "--plan", &p]);
    let op = sup.event("operation_started", None)["operation"]
        .as_str()
        .expect("op")
        .to_string();
    sup.event("worker_started", Some("slow"));
    // A peer that beats every 100 ms and takes 9 s of silence for a crash (more than
    // the supervisor's heartbeat interval).
    let mut peer = Command::new(PEER);
    peer.args(["wait-failed", "--ledger"])
        .arg(&env.ledger)
        .args(["--op", &op, "--participant", "watcher"])
        .args([
            "--hb-ms",
            "100",
            "--stale-ms",
            "9000",
            "--marker",
            &env.marker,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut peer = Peer(peer.spawn().expect("start the peer"));
    let mut peer_out = BufReader::new(peer.0.stdout.take().expect("peer stdout"));
    let mut line = String::new();
    peer_out.read_line(&mut line).expect("peer output");
    assert_eq!(line.trim(), "ready");
    let ticks_file = env.path("slow.ticks");
    wait_until("the worker to tick", || ticks(&ticks_file) >= 3);

    sup.signal_group(Signal::SIGTSTP);
    wait_until("the supervisor to be stopped", || {
        state(sup.pid) == Some('T')
    });
    // Stopped longer than the worker's timeout, the run's timeout and the peer's stale
    // threshold together.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(state(sup.pid), Some('T'));
    let before = ticks(&ticks_file);
    sup.signal_group(Signal::SIGCONT);
    wait_until("the worker to tick again", || ticks(&ticks_file) > before);
    std::fs::write(env.path("stop"), b"").expect("stop file");
    let out = sup.finish();
    out.expect_code(0);
    let events = out.json();
    assert_eq!(
        events[index_of(&events, "worker_finished", "slow")]["status"],
        "ok"
    );
    let log = std::fs::read_to_string(env.ledger.join("backup").join(&op).join("operation.log"))
        .expect("archived log");
    assert!(
        !log.contains("CRASH_"),
        "the paused supervisor was taken for a crashed one:\n{log}"
    );
    drop(peer);
    env.assert_no_leftovers();
}
