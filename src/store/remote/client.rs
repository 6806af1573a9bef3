//! [`RemoteStore`]: the [`Store`] trait over the server's native API. The ledger's
//! changes run here, in the participant, exactly as on the other backends: a change is
//! applied to the newest version this store has seen (`known.rs`) and written with a
//! compare-and-swap on its revision; a refused write's answer carries the current
//! version for the retry, so a change is one request in the common case.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::ids::{OperationId, ParticipantId};
use crate::model::{FrameChange, LedgerData};
use crate::revision::Revision;

use super::super::read_change_write::back_off;
use super::super::{
    ArchiveRef, Change, ChangeStream, ListEntry, LogCursor, LogKind, MAX_ATTEMPTS, Store,
    StoreLocation, Subscribers, Versioned, WriteKind,
};
use super::ages::ServerAges;
use super::feed;
use super::http::{Answer, Http, RequestTiming};
use super::known::Known;
use super::wire::{
    AGES_HEADER, AppendBody, ArchivedBody, BeatBody, CURRENT_ON_CONFLICT, ConflictBody,
    HeartbeatAge, IdsBody, KIND_REFRESH, LogBody, LoggedWriteBody, ON_CONFLICT_HEADER,
    SummariesBody, WITH_LINES_HEADER, WITH_LINES_MAIN, etag, lines_for_write, log_segment,
    parse_etag,
};

/// The operations of a ledger server.
#[derive(Clone)]
pub struct RemoteStore {
    pub(super) http: Http,
    /// Streams of watched operations, fed by one event-stream task per operation.
    pub(super) feed: Arc<Mutex<Subscribers<OperationId>>>,
    /// Operations whose event-stream task runs.
    pub(super) feeding: Arc<Mutex<HashMap<OperationId, tokio::task::JoinHandle<()>>>>,
    /// Heartbeat ages and expired participants the server reported.
    pub(super) ages: Arc<ServerAges>,
    /// The newest version seen of each operation.
    pub(super) known: Arc<Known>,
}

/// How a compare-and-swap came back.
enum Swap {
    /// Written, with whether the lines sent with it were appended.
    Written(Versioned, Result<()>),
    /// Refused: another write came first; the operation as the server had it then, when
    /// the answer carried it.
    Conflict {
        error: Error,
        current: Option<Versioned>,
    },
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("url", &self.http.base)
            .finish()
    }
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        // The last handle ends the event-stream tasks (they hold the table weakly too).
        if Arc::strong_count(&self.feeding) == 1 {
            for (_, task) in self
                .feeding
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
            {
                task.abort();
            }
        }
    }
}

/// Check a server URL: plain `http://host[:port]`, without a path (this build speaks no
/// TLS); a trailing `/` is dropped.
pub fn parse_url(url: &str) -> Result<String> {
    let bad = |reason: &str| Error::invalid(format!("server url `{url}`"), reason.to_string());
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(bad("expected http://HOST:PORT (no TLS in this build)"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("expected no path, query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials go in a token, not in the url"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl RemoteStore {
    /// A store served at `url` (`http://host:port`), sending `token` if given.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        Self::with_timing(url, token, RequestTiming::default())
    }

    pub fn with_timing(url: &str, token: Option<String>, timing: RequestTiming) -> Result<Self> {
        let base = parse_url(url)?;
        Ok(Self {
            http: Http::new(base, token, timing)?,
            feed: Arc::new(Mutex::new(Subscribers::default())),
            feeding: Arc::new(Mutex::new(HashMap::new())),
            ages: Arc::new(ServerAges::default()),
            known: Arc::new(Known::default()),
        })
    }

    /// What the server reports of heartbeats (shared by every clone of this store).
    pub fn server_ages(&self) -> Arc<ServerAges> {
        self.ages.clone()
    }

    /// A participant's heartbeat, kept by the server beside the document; returns the
    /// operation as it is. A participant not active at `epoch` any more is fenced.
    pub async fn beat(
        &self,
        op: &OperationId,
        participant: &ParticipantId,
        epoch: u64,
    ) -> Result<Versioned> {
        let path = format!("{}/beat", Self::op_path(op));
        let body = BeatBody {
            participant: participant.clone(),
            epoch,
        };
        let mut retried = false;
        match self
            .http
            .send(
                || self.http.request(Method::POST, &path).json(&body),
                &mut retried,
            )
            .await?
        {
            Answer::Ok(response) => self.versioned(response).await,
            Answer::Refused { status, .. } if status == StatusCode::GONE => Err(Error::Fenced {
                operation: op.clone(),
                participant: participant.clone(),
                epoch,
            }),
            Answer::Refused {
                status, message, ..
            } => Err(self.op_error(op, status, message)),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.http.base
    }

    fn op_path(op: &OperationId) -> String {
        format!("/v1/operations/{op}")
    }

    /// An error answer about `op` as this crate's error.
    pub(super) fn op_error(&self, op: &OperationId, status: StatusCode, message: String) -> Error {
        match status {
            StatusCode::NOT_FOUND => Error::OperationNotFound(op.clone()),
            StatusCode::CONFLICT => Error::OperationExists(op.clone()),
            other => self.http.refused(other, message),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        op: Option<&OperationId>,
    ) -> Result<T> {
        let mut retried = false;
        match self
            .http
            .send(|| self.http.request(Method::GET, path), &mut retried)
            .await?
        {
            Answer::Ok(response) => self.http.json(response).await,
            Answer::Refused {
                status, message, ..
            } => Err(match op {
                Some(op) => self.op_error(op, status, message),
                None => self.http.refused(status, message),
            }),
        }
    }

    pub(super) async fn versioned(&self, response: reqwest::Response) -> Result<Versioned> {
        if let Some(ages) = response
            .headers()
            .get(AGES_HEADER)
            .and_then(|v| serde_json::from_slice::<Vec<HeartbeatAge>>(v.as_bytes()).ok())
        {
            self.ages.record(&ages);
        }
        let revision = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(parse_etag)
            .transpose()?;
        let data: LedgerData = self.http.json(response).await?;
        let revision = revision.unwrap_or(Revision::new(data.seq));
        let seen = Versioned { data, revision };
        self.known.offer(&seen);
        Ok(seen)
    }

    /// Replace the operation if it is still at `expected`; a refusal brings the
    /// operation as it is, when the server sends it.
    async fn swap(
        &self,
        op: &OperationId,
        expected: Revision,
        data: LedgerData,
        kind: WriteKind,
        lines: &[String],
    ) -> Result<Swap> {
        let mut path = Self::op_path(op);
        if kind == WriteKind::Refresh {
            path.push_str(&format!("?kind={KIND_REFRESH}"));
        }
        // The written data keeps the operation's id.
        let mut data = data;
        data.operation_id = op.clone();
        let tag = etag(expected);
        let logged = (!lines.is_empty()).then(|| LoggedWriteBody {
            data: data.clone(),
            lines: lines.to_vec(),
        });
        let mut retried = false;
        let answer = self
            .http
            .send(
                || {
                    let request = self
                        .http
                        .request(Method::PUT, &path)
                        .header(reqwest::header::IF_MATCH, tag.as_str())
                        .header(ON_CONFLICT_HEADER, CURRENT_ON_CONFLICT);
                    match &logged {
                        Some(logged) => request
                            .header(WITH_LINES_HEADER, WITH_LINES_MAIN)
                            .json(logged),
                        None => request.json(&data),
                    }
                },
                &mut retried,
            )
            .await?;
        match answer {
            Answer::Ok(response) => {
                let appended = self.lines_appended(&response);
                Ok(Swap::Written(self.versioned(response).await?, appended))
            }
            Answer::Refused {
                status, etag, body, ..
            } if status == StatusCode::PRECONDITION_FAILED => {
                let found = etag.as_deref().map(parse_etag).transpose()?;
                let current = match (found, serde_json::from_slice::<ConflictBody>(&body)) {
                    (Some(revision), Ok(body)) => Some(Versioned {
                        data: body.current,
                        revision,
                    }),
                    _ => None,
                };
                if let Some(current) = &current {
                    self.known.offer(current);
                }
                if retried {
                    let now = match &current {
                        Some(current) => Ok(current.clone()),
                        None => self.read_versioned(op).await,
                    };
                    // The server appends a write's lines before it answers.
                    if let Ok(now) = now
                        && is_own_write(&now, &data, expected)
                    {
                        return Ok(Swap::Written(now, Ok(())));
                    }
                }
                Ok(Swap::Conflict {
                    error: Error::Conflict {
                        operation: op.clone(),
                        expected,
                        found: found.unwrap_or(expected),
                    },
                    current,
                })
            }
            Answer::Refused {
                status, message, ..
            } => Err(self.op_error(op, status, message)),
        }
    }

    /// Read-change-write starting from the newest version seen: one write in the common
    /// case. A change that fails on a version seen earlier runs again on a fresh read
    /// before its error counts, so the answer is what the change says of the operation
    /// as it is.
    async fn change_write(
        &self,
        op: &OperationId,
        change: Change<'_>,
        kind: WriteKind,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        let (mut current, mut fresh) = match self.known.get(op) {
            Some(seen) => (seen, false),
            None => (self.read_versioned(op).await?, true),
        };
        let mut attempt = 0;
        // A writer whose view is current right after its own write wins most races, so
        // a loser is given the request deadline, not only a count of attempts.
        let started = tokio::time::Instant::now();
        loop {
            let mut data = current.data.clone();
            if let Err(e) = change(&mut data) {
                if fresh {
                    return Err(e);
                }
                current = self.read_versioned(op).await?;
                fresh = true;
                continue;
            }
            attempt += 1;
            match self.swap(op, current.revision, data, kind, lines).await? {
                Swap::Written(written, appended) => return Ok((written.data, appended)),
                Swap::Conflict { error, .. }
                    if attempt >= MAX_ATTEMPTS
                        && started.elapsed() >= self.http.timing.deadline =>
                {
                    return Err(error);
                }
                Swap::Conflict { current: now, .. } => {
                    // Spread the contenders out (yielding only would not: they are other
                    // processes).
                    back_off(attempt + 3).await;
                    current = match now {
                        // As the server had it when it refused: as fresh as a read.
                        Some(now) => now,
                        None => self.read_versioned(op).await?,
                    };
                    fresh = true;
                }
            }
        }
    }
}

/// Whether `current` is what a write of `sent` on top of `expected` produced: an earlier
/// attempt that reached the server although its answer was lost.
fn is_own_write(current: &Versioned, sent: &LedgerData, expected: Revision) -> bool {
    current.revision == expected.next() && same_content(&current.data, sent)
}

/// Whether two versions of an operation differ only in their revision.
fn same_content(stored: &LedgerData, sent: &LedgerData) -> bool {
    let mut mine = sent.clone();
    mine.seq = stored.seq;
    *stored == mine
}

#[async_trait]
impl Store for RemoteStore {
    fn location(&self) -> StoreLocation {
        StoreLocation::Url(self.http.base.clone())
    }

    async fn create(&self, data: &LedgerData) -> Result<()> {
        let op = &data.operation_id;
        let mut retried = false;
        let answer = self
            .http
            .send(
                || self.http.request(Method::POST, "/v1/operations").json(data),
                &mut retried,
            )
            .await?;
        match answer {
            Answer::Ok(_) => Ok(()),
            Answer::Refused { status, .. }
                if status == StatusCode::CONFLICT
                    && retried
                    && self
                        .read_versioned(op)
                        .await
                        .is_ok_and(|v| same_content(&v.data, data)) =>
            {
                Ok(())
            }
            Answer::Refused {
                status, message, ..
            } => Err(self.op_error(op, status, message)),
        }
    }

    async fn read_versioned(&self, op: &OperationId) -> Result<Versioned> {
        let path = Self::op_path(op);
        let mut retried = false;
        match self
            .http
            .send(|| self.http.request(Method::GET, &path), &mut retried)
            .await?
        {
            Answer::Ok(response) => self.versioned(response).await,
            Answer::Refused {
                status, message, ..
            } => Err(self.op_error(op, status, message)),
        }
    }

    async fn compare_and_swap(
        &self,
        op: &OperationId,
        expected: Revision,
        data: LedgerData,
        kind: WriteKind,
    ) -> Result<Versioned> {
        match self.swap(op, expected, data, kind, &[]).await? {
            Swap::Written(written, _) => Ok(written),
            Swap::Conflict { error, .. } => Err(error),
        }
    }

    async fn modify(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        Ok(self
            .change_write(op, change, WriteKind::Change, &[])
            .await?
            .0)
    }

    /// The change and its lines in one request (lines beyond the bounds of one write,
    /// and all after them, are appended on their own after it).
    async fn modify_logged(
        &self,
        op: &OperationId,
        change: Change<'_>,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        let (with, after) = lines.split_at(lines_for_write(lines));
        let (written, mut appended) = self
            .change_write(op, change, WriteKind::Change, with)
            .await?;
        if let Err(e) = crate::store::append_each(self, op, after).await {
            appended = Err(e);
        }
        Ok((written, appended))
    }

    /// Sent as data: the server applies it (`frames.rs`).
    async fn modify_frame(
        &self,
        op: &OperationId,
        frame: &FrameChange,
        _change: Change<'_>,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        self.send_frame(op, frame, lines).await
    }

    async fn refresh(&self, op: &OperationId, change: Change<'_>) -> Result<LedgerData> {
        Ok(self
            .change_write(op, change, WriteKind::Refresh, &[])
            .await?
            .0)
    }

    fn latest_seen(&self, op: &OperationId) -> Option<Versioned> {
        self.known.get(op)
    }

    async fn list(&self) -> Result<Vec<OperationId>> {
        Ok(self
            .get_json::<IdsBody>("/v1/operations", None)
            .await?
            .operations)
    }

    async fn list_archived(&self) -> Result<Vec<OperationId>> {
        Ok(self
            .get_json::<IdsBody>("/v1/archived", None)
            .await?
            .operations)
    }

    async fn read_archived(&self, op: &OperationId) -> Result<LedgerData> {
        self.get_json(&format!("/v1/archived/{op}"), Some(op)).await
    }

    async fn list_summaries(&self) -> Result<Vec<ListEntry>> {
        let body: SummariesBody = self.get_json("/v1/summaries", None).await?;
        Ok(body
            .entries
            .into_iter()
            .map(|e| e.into_entry(&self.http.base))
            .collect())
    }

    async fn append_log(&self, op: &OperationId, kind: LogKind, line: &str) -> Result<()> {
        let path = format!("{}/log/{}", Self::op_path(op), log_segment(kind));
        let body = AppendBody {
            line: line.to_string(),
        };
        let mut retried = false;
        match self
            .http
            .send(
                || self.http.request(Method::POST, &path).json(&body),
                &mut retried,
            )
            .await?
        {
            Answer::Ok(_) => Ok(()),
            Answer::Refused {
                status, message, ..
            } => Err(self.op_error(op, status, message)),
        }
    }

    async fn read_log(
        &self,
        op: &OperationId,
        kind: LogKind,
        from: LogCursor,
    ) -> Result<(String, LogCursor)> {
        let path = format!(
            "{}/log/{}?from={}",
            Self::op_path(op),
            log_segment(kind),
            from.position()
        );
        let body: LogBody = self.get_json(&path, Some(op)).await?;
        Ok((body.text, LogCursor::at(body.cursor)))
    }

    async fn archive(&self, op: &OperationId) -> Result<ArchiveRef> {
        let path = format!("{}/archive", Self::op_path(op));
        let mut retried = false;
        match self
            .http
            .send(|| self.http.request(Method::POST, &path), &mut retried)
            .await?
        {
            Answer::Ok(response) => {
                self.known.forget(op);
                let body: ArchivedBody = self.http.json(response).await?;
                Ok(ArchiveRef::new(op.clone(), body.location))
            }
            // A retried archive that had gone through finds nothing live any more.
            Answer::Refused { status, .. }
                if status == StatusCode::NOT_FOUND
                    && retried
                    && self.read_archived(op).await.is_ok() =>
            {
                Ok(ArchiveRef::new(
                    op.clone(),
                    format!("{}/v1/archived/{op}", self.http.base),
                ))
            }
            Answer::Refused {
                status, message, ..
            } => Err(self.op_error(op, status, message)),
        }
    }

    fn watch(&self, op: &OperationId) -> Result<ChangeStream> {
        let stream = self
            .feed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subscribe(op.clone());
        feed::ensure_running(self, op)?;
        Ok(stream)
    }
}
