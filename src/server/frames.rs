//! `POST /v1/operations/{op}/frames`: a participant's frame change, applied here to the
//! operation as it is with the ledger's own transition (`ledger/core/frames.rs`: the
//! writer's fencing by epoch and state, then its frame opened or closed), so that writers
//! of one operation never refuse each other as whole-document writes do.
//!
//! Changes to one operation that arrive while a write of it is running go into the next
//! write together (one read-change-write of the store for all of them): each is applied
//! on its own, and one the operation refuses is left out without touching the others.
//! Each gets its own answer: the operation as written, or 409 with what refused it and
//! the operation as it is. Their lines are appended after the write in the order of the
//! changes, holding the operation's turn (`line_order.rs`) as a logged `PUT` does.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::ids::OperationId;
use crate::ledger::core::frames;
use crate::model::FrameChange;
use crate::store::remote::wire::{
    FrameBody, FrameRefusal, FrameRefusedBody, LINES_FAILED_HEADER, check_lines_for_write, etag,
};
use crate::store::{Revision, Versioned};

use super::errors::ApiError;
use super::native::{append_lines, json_body, operation, versioned};
use super::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/operations/{op}/frames", post(change_frames))
}

async fn change_frames(
    State(state): State<AppState>,
    Path(op): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let op = operation(&op)?;
    let body: FrameBody = json_body(&body)?;
    check_lines_for_write(&body.lines)?;
    // Checked again where it is applied; refused here before anything waits.
    frames::check_own(&body.change)?;
    let answer = state.frame_queues.submit(&state, &op, body).await;
    Ok(match answer {
        Answer::Written { written, lines } => {
            let mut response = versioned(&state, StatusCode::OK, written);
            if let Some(e) = lines {
                let reason = HeaderValue::from_str(&e.to_string())
                    .unwrap_or(HeaderValue::from_static("log lines not appended"));
                response.headers_mut().insert(LINES_FAILED_HEADER, reason);
            }
            response
        }
        Answer::Refused { error, current } => refused(error, current),
        Answer::Failed(e) => e.into_response(),
    })
}

/// 409 with what refused the change and the operation as it is; an error that is no
/// refusal of the operation's (none is expected) as itself.
fn refused(error: Error, current: Versioned) -> Response {
    let Some(refusal) = FrameRefusal::of(&error) else {
        return ApiError::from(error).into_response();
    };
    let body = FrameRefusedBody {
        error: error.to_string(),
        refusal,
        current: current.data,
    };
    let mut response = (StatusCode::CONFLICT, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(current.revision)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// What became of one change.
enum Answer {
    /// Written; the first error appending its lines, if one failed.
    Written {
        written: Versioned,
        lines: Option<Error>,
    },
    /// The operation refused it (nothing of it was written).
    Refused { error: Error, current: Versioned },
    /// The write failed as a whole (the operation gone, the store unavailable).
    Failed(ApiError),
}

struct Pending {
    change: FrameChange,
    lines: Vec<String>,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    /// A writer task runs for this operation: it takes what waits meanwhile.
    writing: bool,
}

/// The frame changes waiting for their operation's next write.
#[derive(Default)]
pub struct FrameQueues {
    queues: Mutex<HashMap<OperationId, Queue>>,
}

impl std::fmt::Debug for FrameQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameQueues").finish_non_exhaustive()
    }
}

impl FrameQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OperationId, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a change and wait for its answer. The writer is a task of its own, so a
    /// client that goes away never leaves the queue without one.
    async fn submit(&self, state: &AppState, op: &OperationId, body: FrameBody) -> Answer {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queues = self.lock();
            let queue = queues.entry(op.clone()).or_default();
            queue.waiting.push(Pending {
                change: body.change,
                lines: body.lines,
                reply,
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            tokio::spawn(write_queued(state.clone(), op.clone()));
        }
        answer.await.unwrap_or_else(|_| {
            Answer::Failed(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "frame change dropped before it was written",
            ))
        })
    }

    /// Everything waiting now; `None` (and no writer any more) when nothing is.
    fn take(&self, op: &OperationId) -> Option<Vec<Pending>> {
        let mut queues = self.lock();
        let queue = queues.get_mut(op)?;
        if queue.waiting.is_empty() {
            queues.remove(op);
            return None;
        }
        Some(std::mem::take(&mut queue.waiting))
    }
}

/// Write what waits for `op`, batch after batch, until nothing does.
async fn write_queued(state: AppState, op: OperationId) {
    loop {
        state.write_holds.wait(&op).await;
        let Some(batch) = state.frame_queues.take(&op) else {
            break;
        };
        write_batch(&state, &op, batch).await;
    }
}

/// One read-change-write for the batch; each change applied on its own (one the
/// operation refuses is undone, the others stay), nothing written when none applies.
async fn write_batch(state: &AppState, op: &OperationId, batch: Vec<Pending>) {
    let turn = state.line_order.turn(op).await;
    let mut refusals: Vec<Option<Error>> = Vec::new();
    let written = state
        .store
        .modify(op, &mut |data| {
            // Run again after a conflict: every change starts from the data anew.
            refusals.clear();
            for pending in &batch {
                let before = data.clone();
                let refusal = frames::apply(data, op, &pending.change).err();
                if refusal.is_some() {
                    *data = before;
                }
                refusals.push(refusal);
            }
            if refusals.iter().all(Option::is_some) {
                return Err(Error::invalid("frame changes", "none applies"));
            }
            Ok(())
        })
        .await;
    let current = match written {
        Ok(data) => Versioned {
            revision: Revision::new(data.seq),
            data,
        },
        Err(_) if refusals.len() == batch.len() && refusals.iter().all(Option::is_some) => {
            drop(turn);
            match state.hubs.current(state, op).await {
                Ok(current) => {
                    for (pending, refusal) in batch.into_iter().zip(refusals) {
                        let error =
                            refusal.unwrap_or_else(|| Error::invalid("frame change", "lost"));
                        let _ = pending.reply.send(Answer::Refused {
                            error,
                            current: current.clone(),
                        });
                    }
                }
                Err(e) => fail_all(batch, &ApiError::from(e)),
            }
            return;
        }
        Err(e) => {
            drop(turn);
            fail_all(batch, &ApiError::from(e));
            return;
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    for (pending, refusal) in batch.into_iter().zip(refusals) {
        let answer = match refusal {
            Some(error) => Answer::Refused {
                error,
                current: current.clone(),
            },
            None => Answer::Written {
                written: current.clone(),
                lines: append_lines(state, op, &pending.lines).await,
            },
        };
        answers.push((pending.reply, answer));
    }
    drop(turn);
    // The operation's event streams hear of it now, without a read.
    state.hubs.offer(op, &current);
    for (reply, answer) in answers {
        let _ = reply.send(answer);
    }
}

fn fail_all(batch: Vec<Pending>, error: &ApiError) {
    for pending in batch {
        let _ = pending.reply.send(Answer::Failed(ApiError::new(
            error.status,
            error.message.clone(),
        )));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::Query;
    use axum::http::HeaderMap;
    use tokio::sync::watch;

    use super::*;
    use crate::clock::SystemClock;
    use crate::ledger::core::fixtures::{at, call, frame, operation, pid};
    use crate::model::{FrameStep, LedgerData};
    use crate::store::{MemoryStore, Store};

    const BOUND: Duration = Duration::from_secs(30);

    async fn state_with(data: &LedgerData) -> (AppState, watch::Sender<bool>) {
        let store = Arc::new(MemoryStore::new());
        store.create(data).await.expect("create");
        let (stop, shutdown) = watch::channel(false);
        let state = AppState {
            store,
            clock: Arc::new(SystemClock),
            port: 0,
            base_path: None,
            shutdown,
            ping_interval: Duration::from_secs(5),
            beats: Default::default(),
            hubs: Default::default(),
            line_order: Default::default(),
            frame_queues: Default::default(),
            write_holds: Default::default(),
        };
        (state, stop)
    }

    fn open(who: &str, epoch: u64, id: &str) -> FrameBody {
        FrameBody {
            change: FrameChange {
                participant: pid(who),
                epoch,
                at: at(5),
                step: FrameStep::Open(Box::new(frame(who, id, true))),
            },
            lines: vec![format!("{id} started")],
        }
    }

    fn op() -> OperationId {
        OperationId::parse("op").expect("id")
    }

    #[tokio::test]
    async fn concurrent_changes_of_many_writers_are_all_written_and_answered() {
        let writers = ["a", "b", "c", "d", "e", "f", "g"];
        let (state, _stop) = state_with(&operation("init", &writers)).await;
        let mut answers = Vec::new();
        for (n, who) in writers.iter().enumerate() {
            let state = state.clone();
            let body = open(who, n as u64 + 2, &format!("call-{who}"));
            answers.push(tokio::spawn(async move {
                state.frame_queues.submit(&state, &op(), body).await
            }));
        }
        for answer in answers {
            let answer = tokio::time::timeout(BOUND, answer).await.expect("answered");
            assert!(matches!(
                answer.expect("task"),
                Answer::Written { lines: None, .. }
            ));
        }
        let stored = state.store.read(&op()).await.expect("read");
        assert_eq!(stored.call_frames.len(), writers.len());
        let (log, _) = state
            .store
            .read_log(&op(), crate::store::LogKind::Main, Default::default())
            .await
            .expect("log");
        assert_eq!(log.lines().count(), writers.len(), "{log}");
    }

    #[tokio::test]
    async fn a_refused_change_is_left_out_and_answered_with_its_error() {
        let (state, _stop) = state_with(&operation("init", &["a"])).await;
        let fenced = open("a", 9, "call-stale");
        let refused = state.frame_queues.submit(&state, &op(), fenced).await;
        let Answer::Refused { error, current } = refused else {
            panic!("not refused");
        };
        assert!(
            matches!(&error, Error::Fenced { participant, epoch: 9, .. } if participant == &pid("a")),
            "{error}"
        );
        assert!(current.data.call_frames.is_empty());
        let before = state.store.read_versioned(&op()).await.expect("read");
        assert_eq!(before.revision, current.revision, "nothing written");
        let written = state
            .frame_queues
            .submit(&state, &op(), open("a", 2, "call-ok"))
            .await;
        assert!(matches!(written, Answer::Written { .. }));
        let close = FrameBody {
            change: FrameChange {
                participant: pid("a"),
                epoch: 2,
                at: at(6),
                step: FrameStep::Close(call("call-ok")),
            },
            lines: Vec::new(),
        };
        assert!(matches!(
            state.frame_queues.submit(&state, &op(), close).await,
            Answer::Written { .. }
        ));
        assert!(
            state
                .store
                .read(&op())
                .await
                .expect("read")
                .call_frames
                .is_empty()
        );
    }

    /// A whole-document write refused with the current operation holds frame writes, so
    /// its retry at the revision it was told of is not refused again; a write that
    /// succeeds lets them go on.
    #[tokio::test]
    async fn a_refused_put_holds_frame_writes_until_its_retry_is_written() {
        let (state, _stop) = state_with(&operation("init", &["a"])).await;
        let seen = state.store.read_versioned(&op()).await.expect("read");
        let first = state
            .frame_queues
            .submit(&state, &op(), open("a", 2, "call-first"))
            .await;
        assert!(matches!(first, Answer::Written { .. }));
        let put = |version: &Versioned| {
            let mut headers = HeaderMap::new();
            let tag = format!("\"{}\"", version.revision.get());
            headers.insert(header::IF_MATCH, HeaderValue::from_str(&tag).unwrap());
            headers.insert(
                crate::store::remote::wire::ON_CONFLICT_HEADER,
                HeaderValue::from_static(crate::store::remote::wire::CURRENT_ON_CONFLICT),
            );
            let body = Bytes::from(serde_json::to_vec(&version.data).unwrap());
            super::super::native::swap(
                State(state.clone()),
                Path("op".to_string()),
                Query(HashMap::new()),
                headers,
                body,
            )
        };
        let refused = put(&seen).await.expect("answer");
        assert_eq!(refused.status(), StatusCode::PRECONDITION_FAILED);
        let current = state.store.read_versioned(&op()).await.expect("read");
        assert!(state.write_holds.is_held(&op()));
        // A frame change now waits (bounded by the hold) instead of moving the
        // operation on under the retry.
        let waiting = {
            let state = state.clone();
            tokio::spawn(async move {
                state
                    .frame_queues
                    .submit(&state, &op(), open("a", 2, "call-held"))
                    .await
            })
        };
        tokio::time::timeout(BOUND, async {
            while !state
                .frame_queues
                .lock()
                .get(&op())
                .is_some_and(|q| !q.waiting.is_empty())
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the change is queued");
        let retried = put(&current).await.expect("answer");
        assert_eq!(retried.status(), StatusCode::OK, "the retry is not refused");
        assert!(!state.write_holds.is_held(&op()));
        let answer = tokio::time::timeout(BOUND, waiting)
            .await
            .expect("written once released")
            .expect("task");
        let Answer::Written { written, .. } = answer else {
            panic!("not written");
        };
        assert_eq!(written.revision, current.revision.next().next());
    }
}
