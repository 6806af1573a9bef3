//! Group commit: the changes of one participant that arrive while a write of it is in
//! flight go into the next write together, one read-change-write for all of them, and
//! that write runs on a thread of its own, so the caller's thread (the one that starts and
//! reaps the workers) never waits for the disk.
//!
//! Only changes that own what they capture can be queued ([`QueuedChange`]): a call's
//! frame written and removed, the writes of every worker. Every other write of the
//! participant goes through [`Commits::turn`] too and first writes what is queued before
//! it, so this participant's writes stay in the order they were asked for.
//!
//! On `run`'s current-thread runtime, a write on the writer thread that only carries
//! workers' frames waits until the oldest of them has been queued for [`GATHER`] before
//! it is made: a short worker's start and end then go into one write, and the workers
//! started and ended meanwhile with them. The wait is the writer's, never the caller's;
//! until a frame is written the worker's parent-death signal covers a crash of this
//! process, as it does while any write is in flight. A queued change that is waited for
//! at once (`Flush::Inline`) ends the wait.
//!
//! A change that fails is left out of the write without touching the others (queued
//! changes check before they change anything); a write that fails as a whole
//! (fenced, the operation gone, the lock not had) is retried one change at a time, so
//! every caller gets its own answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::future::BoxFuture;
use crate::model::{FrameStep, LedgerData, LogLevel};

use super::shared::OpShared;

/// A change of this participant that may wait for the next write. It shares the write
/// with others, so it must fail without touching the data or succeed (check first, then
/// change), as the frames' `start` and `end` do.
pub(crate) type QueuedChange = Box<dyn FnMut(&mut LedgerData, Timestamp) -> Result<()> + Send>;

/// A log line that reports a queued change: written with the change (in the same
/// write where the store can), and, when the change fails, after it if `if_failed`.
pub(crate) struct LogLine {
    pub level: LogLevel,
    pub message: String,
    pub if_failed: bool,
    /// When what it reports happened; `None`: stamped when written. A line written
    /// after the fact (a worker's end recorded once the next worker runs) keeps the
    /// time of the event, so the log's timeline is the workers' own.
    pub at: Option<Timestamp>,
}

impl LogLine {
    /// Written whatever becomes of the change.
    pub fn always(level: LogLevel, message: String) -> Self {
        Self {
            level,
            message,
            if_failed: true,
            at: None,
        }
    }

    /// Written only with the change.
    pub fn if_written(level: LogLevel, message: String) -> Self {
        Self {
            level,
            message,
            if_failed: false,
            at: None,
        }
    }

    /// The same line, stamped with the time of the event it reports.
    pub fn stamped(self, at: Timestamp) -> Self {
        Self {
            at: Some(at),
            ..self
        }
    }
}

pub(crate) type ThenLog = Option<LogLine>;

struct Entry {
    change: QueuedChange,
    /// The change as data when it is a frame step (`change` is that step): a write of
    /// this change alone may send the step to the store instead.
    frame: Option<FrameStep>,
    then_log: ThenLog,
    reply: oneshot::Sender<Result<()>>,
}

impl Entry {
    /// Answer the change; its log line, unless written with it, is appended first (by
    /// the writer, so that the thread of a current-thread runtime does not append it
    /// either) where it is due.
    async fn answer(self, shared: &OpShared, result: Result<()>, line_written: bool) {
        if let Some(log) = &self.then_log
            && !line_written
            && (result.is_ok() || log.if_failed)
        {
            shared.log_quietly_at(log.at, log.level, &log.message).await;
        }
        let _ = self.reply.send(result);
    }
}

/// How long the writer thread lets workers' frame writes gather (see the module notes).
const GATHER: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    /// A flush is scheduled or running: it takes what is queued meanwhile.
    flushing: bool,
    /// When the oldest queued entry was queued.
    oldest: Option<Instant>,
    /// A queued entry is waited for at once: no gathering.
    urgent: bool,
}

/// How long a background writer waits for more changes once it has written what was
/// queued, before its thread goes back to the pool. Changes come in bursts (workers
/// starting and ending); a flush started while the last one's thread is still on its way
/// back would get a second thread, and with it a second glibc arena holding the writes'
/// memory.
const WRITER_LINGER: Duration = Duration::from_millis(20);

/// The write queue of one participant in one operation.
#[derive(Default)]
pub(crate) struct Commits {
    queue: Mutex<Queue>,
    /// Signalled on every change queued (for a background writer that waits for more).
    queued: Condvar,
    /// Held by whoever writes for this participant (a flush, or a direct write after it
    /// has written what was queued before it).
    pub turn: tokio::sync::Mutex<()>,
}

impl Commits {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `change`; true when the caller must start a flush.
    fn push(
        &self,
        change: QueuedChange,
        frame: Option<FrameStep>,
        then_log: ThenLog,
        flush: Flush,
    ) -> (oneshot::Receiver<Result<()>>, bool) {
        let (reply, rx) = oneshot::channel();
        let mut queue = self.queue();
        queue.oldest.get_or_insert_with(Instant::now);
        queue.urgent |= flush == Flush::Inline;
        queue.entries.push(Entry {
            change,
            frame,
            then_log,
            reply,
        });
        let start = !std::mem::replace(&mut queue.flushing, true);
        drop(queue);
        self.queued.notify_one();
        (rx, start)
    }

    /// For a background writer that has written everything queued: wait up to `linger`
    /// for more. True when some came (the writer goes on); false when none did (the
    /// flush ends: the next change starts one).
    fn linger(&self, linger: Duration) -> bool {
        let deadline = Instant::now() + linger;
        let mut queue = self.queue();
        while queue.entries.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                queue.flushing = false;
                return false;
            }
            queue = match self.queued.wait_timeout(queue, left) {
                Ok((queue, _)) => queue,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Everything queued now; `None` (and no flush any more) when nothing is.
    fn take(&self, ending_flush: bool) -> Option<Vec<Entry>> {
        let mut queue = self.queue();
        if queue.entries.is_empty() {
            if ending_flush {
                queue.flushing = false;
            }
            return None;
        }
        queue.oldest = None;
        queue.urgent = false;
        Some(std::mem::take(&mut queue.entries))
    }

    /// How much longer what is queued may gather before it is written.
    #[cfg(test)]
    fn gather_left(&self) -> Option<Duration> {
        Self::left_to_gather(&self.queue())
    }

    fn left_to_gather(queue: &Queue) -> Option<Duration> {
        if queue.urgent {
            return None;
        }
        let left = GATHER.saturating_sub(queue.oldest?.elapsed());
        Some(left).filter(|left| !left.is_zero())
    }

    /// For the background writer: wait while what is queued may still gather. A change
    /// queued meanwhile wakes it, so an urgent one ends the wait at once.
    fn gather(&self) {
        let mut queue = self.queue();
        while let Some(left) = Self::left_to_gather(&queue) {
            queue = match self.queued.wait_timeout(queue, left) {
                Ok((queue, _)) => queue,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Who writes a queued change when no write of this participant is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// The caller, on its own task (no thread hop: a participant that waits for each of
    /// its writes in turn, as a call start and end do).
    Inline,
    /// On a current-thread runtime, a thread of the runtime's blocking pool, so the
    /// runtime's one thread (which starts and reaps the workers) goes on meanwhile. On a
    /// multi-thread runtime the caller writes, as inline: its other threads go on, and a
    /// hop to another thread would only add to the time until the write is done.
    Background,
}

/// A change handed to the group commit: resolves with its answer. It runs the flush
/// its caller owes when no write of this participant was in flight (see [`Flush`]), and
/// holds nothing else while it waits (a running worker's pending frame write is one of
/// these).
pub(crate) struct Queued {
    shared: Arc<OpShared>,
    /// The flush this caller runs itself (inline), until it is done.
    flush: Option<BoxFuture<'static, ()>>,
    answer: oneshot::Receiver<Result<()>>,
}

impl Future for Queued {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(flush) = self.flush.as_mut() {
            if flush.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.flush = None;
        }
        match Pin::new(&mut self.answer).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::WriteDropped {
                operation: self.shared.id.clone(),
            })),
        }
    }
}

impl Drop for Queued {
    /// A caller that goes away before its inline flush is done hands it to the runtime:
    /// the changes queued behind its own are written and answered all the same.
    fn drop(&mut self) {
        if let Some(flush) = self.flush.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(flush);
        }
    }
}

impl OpShared {
    /// A frame step of this participant in the next group write, described as data too
    /// (see [`queue_change`](Self::queue_change)): the step takes its place in the queue
    /// at once and the future returned waits for its answer.
    pub(crate) fn queue_frame_step(
        self: &Arc<Self>,
        step: FrameStep,
        flush: Flush,
        then_log: ThenLog,
    ) -> Queued {
        let applied = step.clone();
        let change: QueuedChange =
            Box::new(move |data, _| super::core::frames::step(data, &applied));
        self.queue_change(change, Some(step), flush, then_log)
    }

    /// Change the operation as this participant in the next group write (see the module
    /// notes), with `then_log` appended to the operation log (see [`LogLine`]): the
    /// change takes its place in the queue at once, and the future returned resolves
    /// once both are done (not with the data as written: a batch would copy the whole
    /// operation once per change). `frame`: the change as data, when it is a frame step.
    pub(crate) fn queue_change(
        self: &Arc<Self>,
        change: QueuedChange,
        frame: Option<FrameStep>,
        flush: Flush,
        then_log: ThenLog,
    ) -> Queued {
        let (answer, start) = self.commits.push(change, frame, then_log, flush);
        let mut inline: Option<BoxFuture<'static, ()>> = None;
        if start {
            let shared = self.clone();
            // Boxed: inline, the flush's state would make every queued change's future
            // (one per running worker) as large as a whole write.
            match flush {
                // One thread writes while changes keep coming (see `WRITER_LINGER`).
                Flush::Background if on_current_thread_runtime() => {
                    let runtime = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || {
                        loop {
                            runtime.block_on(shared.write_all_queued());
                            if !shared.commits.linger(WRITER_LINGER) {
                                break;
                            }
                        }
                    });
                }
                Flush::Inline | Flush::Background => inline = Some(Box::pin(shared.flush_queued())),
            }
        }
        Queued {
            shared: self.clone(),
            flush: inline,
            answer,
        }
    }

    /// Write what is queued, batch after batch, until nothing is.
    async fn flush_queued(self: Arc<Self>) {
        let _turn = self.commits.turn.lock().await;
        while let Some(batch) = self.commits.take(true) {
            self.write_batch(batch).await;
        }
    }

    /// On the background writer's thread: write what is queued, batch after batch, until
    /// nothing is, each batch of workers' frames first gathering (see the module notes);
    /// the flush goes on (the writer then waits for more, see [`Commits::linger`]).
    async fn write_all_queued(self: &Arc<Self>) {
        let _turn = self.commits.turn.lock().await;
        loop {
            // The writer thread's own wait: nothing else runs on it.
            self.commits.gather();
            let Some(batch) = self.commits.take(false) else {
                break;
            };
            self.write_batch(batch).await;
        }
    }

    /// For a direct write, holding the turn: write what was queued before it first.
    pub(super) async fn write_queued_before(self: &Arc<Self>) {
        while let Some(batch) = self.commits.take(false) {
            self.write_batch(batch).await;
        }
    }

    /// One change with its log line in one write (where the store can).
    async fn write_one(self: &Arc<Self>, mut entry: Entry) {
        let lines: Vec<String> = entry
            .then_log
            .iter()
            .map(|log| {
                self.ledger
                    .log_line_text_at(log.at, log.level, &log.message)
            })
            .collect();
        let result = self
            .write_now_logged_to_view(&mut entry.change, entry.frame.as_ref(), &lines)
            .await;
        let written = result.is_ok();
        entry.answer(self, result, written).await;
    }

    /// One read-change-write for the whole batch, each change answered on its own. The
    /// lines due whatever becomes of their change go with the write; the others after
    /// it, for the changes that were made.
    async fn write_batch(self: &Arc<Self>, mut batch: Vec<Entry>) {
        if batch.len() == 1 {
            let entry = batch.pop().expect("one entry");
            self.write_one(entry).await;
            return;
        }
        let lines: Vec<String> = batch
            .iter()
            .filter_map(|e| e.then_log.as_ref())
            .filter(|log| log.if_failed)
            .map(|log| {
                self.ledger
                    .log_line_text_at(log.at, log.level, &log.message)
            })
            .collect();
        let mut failures: Vec<Option<Error>> = Vec::new();
        let written = {
            let mut changes: Vec<&mut QueuedChange> =
                batch.iter_mut().map(|e| &mut e.change).collect();
            let failures = &mut failures;
            self.write_now_logged_to_view(
                &mut |data: &mut LedgerData, now: Timestamp| {
                    // Run again after a conflict: every change starts from the data anew.
                    failures.clear();
                    for change in changes.iter_mut() {
                        failures.push(change(data, now).err());
                    }
                    Ok(())
                },
                None,
                &lines,
            )
            .await
        };
        match written {
            Ok(_) => {
                for (entry, failure) in batch.into_iter().zip(failures) {
                    let with_write = entry.then_log.as_ref().is_some_and(|log| log.if_failed);
                    entry
                        .answer(self, failure.map_or(Ok(()), Err), with_write)
                        .await;
                }
            }
            // Failed as a whole: each change alone, so each gets its own error.
            Err(_) => {
                for entry in batch {
                    self.write_one(entry).await;
                }
            }
        }
    }
}

/// Whether the caller runs on a current-thread runtime (its one thread does everything).
fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> QueuedChange {
        Box::new(|_: &mut LedgerData, _: Timestamp| Ok(()))
    }

    #[test]
    fn workers_frames_gather_until_the_oldest_is_old_enough_or_one_is_urgent() {
        let commits = Commits::default();
        assert_eq!(commits.gather_left(), None, "nothing queued");
        let (_a, start) = commits.push(noop(), None, None, Flush::Background);
        assert!(start, "the first change starts a flush");
        let left = commits.gather_left().expect("a background frame gathers");
        assert!(left <= GATHER);
        let (_b, start) = commits.push(noop(), None, None, Flush::Background);
        assert!(!start, "one flush at a time");
        std::thread::sleep(GATHER);
        assert_eq!(commits.gather_left(), None, "the oldest waited long enough");
        assert_eq!(commits.take(true).map(|b| b.len()), Some(2));

        let (_c, _) = commits.push(noop(), None, None, Flush::Background);
        assert!(commits.gather_left().is_some());
        let (_d, _) = commits.push(noop(), None, None, Flush::Inline);
        assert_eq!(
            commits.gather_left(),
            None,
            "an urgent change ends the wait"
        );
        assert_eq!(commits.take(true).map(|b| b.len()), Some(2));
        assert_eq!(
            commits.gather_left(),
            None,
            "a taken batch leaves nothing to wait for"
        );
    }

    fn change() -> QueuedChange {
        Box::new(|_, _| Ok(()))
    }

    /// A writer that waits for more ends the flush when nothing comes: the next change
    /// starts a new one.
    #[test]
    fn a_writer_with_nothing_more_to_write_ends_the_flush() {
        let commits = Commits::default();
        let (_answer, start) = commits.push(change(), None, None, Flush::Background);
        assert!(start);
        assert!(commits.take(false).is_some());
        assert!(!commits.linger(Duration::from_millis(1)));
        let (_answer, start) = commits.push(change(), None, None, Flush::Background);
        assert!(start, "a new flush starts");
    }

    /// A change queued while a writer waits for more is taken by that writer: no second
    /// flush (and no second thread) is started.
    #[test]
    fn a_change_queued_while_the_writer_waits_goes_to_that_writer() {
        let commits = Arc::new(Commits::default());
        let (_first, start) = commits.push(change(), None, None, Flush::Background);
        assert!(start);
        assert!(commits.take(false).is_some());
        let waiting = {
            let commits = commits.clone();
            std::thread::spawn(move || commits.linger(Duration::from_secs(60)))
        };
        let (_second, start) = commits.push(change(), None, None, Flush::Background);
        assert!(!start, "the waiting writer takes it");
        assert!(waiting.join().expect("linger"), "the writer goes on");
        assert_eq!(commits.take(false).map(|b| b.len()), Some(1));
    }
}
