//! Change notification for the file store: one inotify watch on the ledger directory per
//! store, shared by every subscriber in the process.
//!
//! Writers replace an operation file by rename, which the directory watch reports as
//! `IN_MOVED_TO` for that name; archiving reports `IN_MOVED_FROM`. A background thread
//! turns those events into bumps of a per-operation `watch` channel, so waiting tasks
//! learn of an abort within milliseconds instead of at the next heartbeat.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::ChangeReceiver;

type Subscribers = Mutex<HashMap<String, watch::Sender<u64>>>;

#[derive(Debug)]
pub struct DirWatcher {
    dir: PathBuf,
    subscribers: Arc<Subscribers>,
    started: Mutex<Option<Arc<AtomicBool>>>,
}

impl DirWatcher {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            subscribers: Arc::new(Mutex::new(HashMap::new())),
            started: Mutex::new(None),
        }
    }

    /// Receiver that moves whenever the file `name` in the directory is replaced or removed.
    pub fn subscribe(&self, name: String, path: PathBuf) -> Result<ChangeReceiver> {
        self.ensure_started(&path)?;
        let mut subs = lock(&self.subscribers);
        subs.retain(|_, tx| tx.receiver_count() > 0);
        let rx = subs
            .entry(name)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Ok(rx)
    }

    fn ensure_started(&self, path: &Path) -> Result<()> {
        let mut started = lock(&self.started);
        if started.is_some() {
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
            .map_err(|e| Error::io("watch", path, std::io::Error::from(e)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let subscribers = Arc::downgrade(&self.subscribers);
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("ledger-watch".into())
            .spawn(move || run(inotify, subscribers, thread_stop))
            .map_err(|e| Error::io("start watcher for", self.dir.clone(), e))?;
        *started = Some(stop);
        Ok(())
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        if let Some(stop) = lock(&self.started).take() {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

fn run(inotify: Inotify, subscribers: Weak<Subscribers>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(250u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        let Some(subscribers) = subscribers.upgrade() else {
            return;
        };
        let subs = lock(&subscribers);
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
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
