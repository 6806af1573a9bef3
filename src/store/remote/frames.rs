//! A participant's frame change sent as data (`POST /v1/operations/{op}/frames`): the
//! server applies it to the operation as it is, under its own lock, so the writers of
//! one operation never refuse each other's writes (a whole document written with
//! `If-Match` is refused whenever another writer came first).

use reqwest::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::ids::OperationId;
use crate::model::{FrameChange, LedgerData};

use super::super::Versioned;
use super::client::RemoteStore;
use super::http::Answer;
use super::wire::{FrameBody, FrameRefusedBody, LINES_FAILED_HEADER, lines_for_write, parse_etag};

impl RemoteStore {
    /// Whether the server appended the lines written with a change: it says so in a
    /// header when it could not.
    pub(super) fn lines_appended(&self, response: &reqwest::Response) -> Result<()> {
        match response.headers().get(LINES_FAILED_HEADER) {
            Some(reason) => Err(Error::Unavailable {
                location: self.http.base.clone(),
                reason: format!(
                    "log lines not appended: {}",
                    String::from_utf8_lossy(reason.as_bytes())
                ),
            }),
            None => Ok(()),
        }
    }

    /// The change and its lines in one request (lines beyond the bounds of one write,
    /// and all after them, are appended on their own after it). A refusal is the error
    /// the change gives on the operation as it is; the operation it brings is kept as
    /// the newest seen.
    pub(super) async fn send_frame(
        &self,
        op: &OperationId,
        frame: &FrameChange,
        lines: &[String],
    ) -> Result<(LedgerData, Result<()>)> {
        let (with, after) = lines.split_at(lines_for_write(lines));
        let path = format!("/v1/operations/{op}/frames");
        let body = FrameBody {
            change: frame.clone(),
            lines: with.to_vec(),
        };
        // A retry after a lost answer applies the change again to the operation as it
        // is then: opening a frame that is there, or closing one that is gone, changes
        // nothing.
        let mut retried = false;
        let answer = self
            .http
            .send(
                || self.http.request(Method::POST, &path).json(&body),
                &mut retried,
            )
            .await?;
        let (written, mut appended) = match answer {
            Answer::Ok(response) => {
                let appended = self.lines_appended(&response);
                (self.versioned(response).await?, appended)
            }
            Answer::Refused {
                status,
                etag,
                body,
                message,
            } if status == StatusCode::CONFLICT => {
                let refused = serde_json::from_slice::<FrameRefusedBody>(&body).ok();
                let revision = etag.as_deref().map(parse_etag).transpose()?;
                return Err(match (refused, revision) {
                    (Some(refused), Some(revision)) => {
                        self.known.offer(&Versioned {
                            data: refused.current,
                            revision,
                        });
                        refused.refusal.into_error(op)
                    }
                    _ => self.op_error(op, status, message),
                });
            }
            Answer::Refused {
                status, message, ..
            } => return Err(self.op_error(op, status, message)),
        };
        if let Err(e) = crate::store::append_each(self, op, after).await {
            appended = Err(e);
        }
        Ok((written.data, appended))
    }
}
