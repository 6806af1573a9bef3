//! Change notification for the file store: one inotify watch on the ledger directory per
//! store, shared by every subscriber in the process.
//!
//! Writers replace an operation file by rename, which the directory watch reports as
//! `IN_MOVED_TO` for that name whichever process renamed; archiving reports
//! `IN_MOVED_FROM`, and a writer of the original format (in place) `IN_CLOSE_WRITE`. A
//! background thread turns those events into changes on the operation's streams, so
//! waiting tasks learn of an abort within milliseconds instead of at the next heartbeat.
//! The thread sleeps in `poll` until an event comes or the store is dropped, which closes
//! the thread's wake-up socket; the drop then joins the thread.
//!
//! - Events carry no revision (learning it would cost a read per event); a name that was
//!   moved away or deleted and is not there any more is reported as archived (a swap in
//!   by `RENAME_EXCHANGE` also moves the old file away, but the name stays).
//! - A queue overflow (events lost) is a resync for every stream.
//! - If the thread stops on an error, every stream ends (its reader sees the end) and the
//!   next subscription starts a new thread.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::store::{ChangeStream, OperationChange, Subscribers};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

type Shared = Mutex<Subscribers<String>>;

/// The running thread: closing `wake` stops it.
#[derive(Debug)]
struct Running {
    wake: UnixStream,
    thread: JoinHandle<()>,
}

#[derive(Debug)]
pub struct DirWatcher {
    dir: PathBuf,
    subscribers: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl DirWatcher {
    /// A watcher of `dir`; the thread starts with the first subscription.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            subscribers: Arc::new(Mutex::new(Subscribers::default())),
            running: Mutex::new(None),
        }
    }

    /// A stream of the changes of the file `name` in the directory (replaced, written or
    /// moved away). Events from before this call are not reported.
    pub fn subscribe(&self, name: String) -> Result<ChangeStream> {
        let mut running = lock(&self.running);
        self.ensure_started(&mut running)?;
        // Under the `running` lock: a thread that stopped cannot end this stream unseen.
        Ok(lock(&self.subscribers).subscribe(name))
    }

    fn ensure_started(&self, running: &mut Option<Running>) -> Result<()> {
        if running.as_ref().is_some_and(|r| !r.thread.is_finished()) {
            return Ok(());
        }
        if let Some(stopped) = running.take() {
            let _ = stopped.thread.join();
        }
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| Error::sys("inotify_init", e))?;
        let mask = AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE;
        inotify
            .add_watch(&self.dir, mask)
            .map_err(|e| Error::io("watch", &self.dir, std::io::Error::from(e)))?;
        let (wake, stop) =
            UnixStream::pair().map_err(|e| Error::io("start watcher for", &self.dir, e))?;
        let subscribers = Arc::downgrade(&self.subscribers);
        let dir = self.dir.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-watch".into())
            .spawn(move || {
                run(inotify, stop, &dir, &subscribers);
                // Whatever stopped the thread, no stream waits on it unknowingly.
                if let Some(subscribers) = subscribers.upgrade() {
                    lock(&subscribers).end_all();
                }
            })
            .map_err(|e| Error::io("start watcher for", &self.dir, e))?;
        *running = Some(Running { wake, thread });
        Ok(())
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        if let Some(Running { wake, thread }) = lock(&self.running).take() {
            drop(wake);
            let _ = thread.join();
        }
    }
}

fn run(inotify: Inotify, stop: UnixStream, dir: &Path, subscribers: &Weak<Shared>) {
    loop {
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("ledger watcher stops: poll failed: {e}");
                return;
            }
        }
        // Any readiness of the wake-up socket (hang-up: the store was dropped) means stop.
        if fds[1].any().unwrap_or(true) {
            return;
        }
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("ledger watcher stops: reading events failed: {e}");
                return;
            }
        };
        let Some(subscribers) = subscribers.upgrade() else {
            return;
        };
        let mut subs = lock(&subscribers);
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: tell everyone to look again.
                subs.resync_all();
                continue;
            }
            let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else {
                continue;
            };
            if !subs.is_watched(name) {
                continue;
            }
            let gone = AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_DELETE;
            let change = if event.mask.intersects(gone) && !present(&dir.join(name)) {
                OperationChange::archived(None)
            } else {
                OperationChange::changed(None)
            };
            subs.publish(name, change);
        }
    }
}

fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
