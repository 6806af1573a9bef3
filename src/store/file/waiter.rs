//! Threads that wait in `flock` for the lock module, so no caller's thread (an async
//! runtime's, above all) ever blocks on a lock another process holds.
//!
//! Threads are kept for a while after their wait and reused, since contended writes come
//! in bursts and starting a thread costs more than the rest of a write. A thread stays
//! blocked as long as the lock it waits for stays held (a stopped holder); its caller
//! has given up long before, and the thread releases the lock the moment it gets it.

use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// A wait to run on a waiter thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// How long an idle waiter thread is kept for the next wait.
const IDLE_FOR: Duration = Duration::from_secs(10);

struct Idle {
    id: u64,
    jobs: Sender<Job>,
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn idle() -> std::sync::MutexGuard<'static, Vec<Idle>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `job` on an idle waiter thread, or on a new one.
pub fn submit(job: Job) {
    let taken = idle().pop();
    if let Some(thread) = taken {
        // An idle thread leaves the list before it ends, so its channel is open.
        match thread.jobs.send(job) {
            Ok(()) => return,
            Err(mpsc::SendError(job)) => return start(job),
        }
    }
    start(job);
}

fn start(job: Job) {
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (jobs, rx) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("ledger-lock-wait".into())
        .spawn(move || {
            job();
            loop {
                idle().push(Idle {
                    id,
                    jobs: jobs.clone(),
                });
                match rx.recv_timeout(IDLE_FOR) {
                    Ok(job) => job(),
                    Err(RecvTimeoutError::Timeout) => {
                        let mut list = idle();
                        if let Some(i) = list.iter().position(|t| t.id == id) {
                            list.remove(i);
                            return;
                        }
                        // Taken just now: the job is on its way.
                        drop(list);
                        match rx.recv() {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        });
    if let Err(e) = spawned {
        // No thread to wait in: the job is dropped, and its caller is told the waiter
        // ended without an answer.
        tracing::warn!(error = %e, "cannot start a lock waiter thread");
    }
}
