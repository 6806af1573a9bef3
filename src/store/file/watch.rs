//! Change notification for the file store: one inotify watch on the ledger directory per
//! store, shared by every subscriber in the process.
//!
//! Writers replace an operation file by rename, which the directory watch reports as
//! `IN_MOVED_TO` for that name whichever process renamed; archiving reports
//! `IN_MOVED_FROM`, and a writer of the original format (in place) `IN_CLOSE_WRITE`. A
//! background thread turns those events into bumps of a per-operation `watch` channel, so
//! waiting tasks learn of an abort within milliseconds instead of at the next heartbeat.
//! The thread sleeps in `poll` until an event comes or the store is dropped, which closes
//! the thread's wake-up socket; the drop then joins the thread.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::ChangeReceiver;

type Subscribers = Mutex<HashMap<String, watch::Sender<u64>>>;

/// The running thread: closing `wake` stops it.
#[derive(Debug)]
struct Running {
    wake: UnixStream,
    thread: JoinHandle<()>,
}

#[derive(Debug)]
pub struct DirWatcher {
    dir: PathBuf,
    subscribers: Arc<Subscribers>,
    running: Mutex<Option<Running>>,
}

impl DirWatcher {
    /// A watcher of `dir`; the thread starts with the first subscription.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            subscribers: Arc::new(Mutex::new(HashMap::new())),
            running: Mutex::new(None),
        }
    }

    /// Receiver that moves whenever the file `name` in the directory is replaced, written
    /// or moved away. Events from before this call are not reported.
    pub fn subscribe(&self, name: String) -> Result<ChangeReceiver> {
        self.ensure_started()?;
        let mut subs = lock(&self.subscribers);
        subs.retain(|_, tx| tx.receiver_count() > 0);
        let rx = subs
            .entry(name)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Ok(rx)
    }

    fn ensure_started(&self) -> Result<()> {
        let mut running = lock(&self.running);
        if running.is_some() {
            return Ok(());
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
        let thread = std::thread::Builder::new()
            .name("ledger-watch".into())
            .spawn(move || run(inotify, stop, subscribers))
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

fn run(inotify: Inotify, stop: UnixStream, subscribers: Weak<Subscribers>) {
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
        let subs = lock(&subscribers);
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: tell everyone to look again.
                subs.values().for_each(|tx| tx.send_modify(|n| *n += 1));
                continue;
            }
            let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(tx) = subs.get(name) {
                tx.send_modify(|n| *n += 1);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
