//! Who a request of the original's protocol acts for.
//!
//! The original server acted for whichever client first created or joined an operation
//! through it, for every later client too (its bug: one participant id, pid and initiator
//! flag for all). Here each request acts for the participant that sent it, found in the
//! operation's own registry (so a restarted server knows everyone):
//!
//! - `participantId` in the body or a `Participant-Id` header (the two must agree);
//! - `sessionId`: the session ids this server hands out are registration epochs, unique
//!   within an operation, so a session names its participant and a re-registered one is
//!   refused as fenced;
//! - a call id names the participant owning the call's frame;
//! - a request that says nothing (the original client's heartbeat and complete carry only
//!   the operation id) is taken for the one participant that joined through this
//!   protocol, or for the initiator in the case of `complete`. With several such
//!   participants it is refused: guessing would let one client's beats keep another,
//!   dead one alive.
//!
//! A participant registered through this protocol has no uid, boot id or start time:
//! nothing about its process can be checked from the server's host, so everyone judges
//! it by the heartbeats the server stamps with its own clock.

use axum::body::Bytes;
use axum::http::HeaderMap;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::ids::{CallId, OperationId, ParticipantId};
use crate::model::{LedgerData, Participant, ParticipantState};

use super::request::{ApiResult, Fields};

/// The header a client may name itself in (listed by the original's CORS headers).
pub(crate) const PARTICIPANT_HEADER: &str = "participant-id";

/// A request that acts on one operation as its sender: the body's fields, the
/// operation it names and who it says sent it.
pub(crate) struct Sent {
    pub fields: Fields,
    pub op: OperationId,
    pub claims: Claims,
}

impl Sent {
    pub fn read(headers: &HeaderMap, body: &Bytes) -> ApiResult<Sent> {
        let fields = Fields::from_body(headers, body)?;
        let op = fields.operation()?;
        let claims = Claims::read(&fields, headers)?;
        Ok(Sent { fields, op, claims })
    }
}

/// What a request says about who sent it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Claims {
    pub participant: Option<ParticipantId>,
    pub session: Option<u64>,
}

impl Claims {
    /// The claims of a request: `participantId` (body or header) and `sessionId`.
    pub fn read(fields: &Fields, headers: &HeaderMap) -> ApiResult<Claims> {
        let in_body = fields.participant("participantId")?;
        let in_header = match headers.get(PARTICIPANT_HEADER) {
            None => None,
            Some(v) => Some(ParticipantId::parse(String::from_utf8_lossy(v.as_bytes()))?),
        };
        let participant = match (in_body, in_header) {
            (Some(b), Some(h)) if b != h => {
                return Err(Error::invalid(
                    format!("participant `{b}` in the body"),
                    format!("the `Participant-Id` header names `{h}`"),
                )
                .into());
            }
            (b, h) => b.or(h),
        };
        let session = fields.int("sessionId", 0..=i64::MAX)?.map(|s| s as u64);
        Ok(Claims {
            participant,
            session,
        })
    }
}

/// Whom a request that claims nothing is taken for.
#[derive(Clone, Debug)]
pub(crate) enum Unclaimed {
    /// The one active participant that joined through this protocol.
    SoleOriginalClient,
    /// The initiator, when it joined through this protocol.
    Initiator,
    /// The owner of this call's frame (whatever it claims must agree).
    FrameOwner(CallId),
}

/// A participant as a request acts for it: its id and registration epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub id: ParticipantId,
    pub epoch: u64,
}

/// Whether a registered participant came through this protocol (see the module notes).
pub(crate) fn is_original_client(p: &Participant) -> bool {
    p.uid.is_none() && p.boot_id.is_none() && p.start_ticks.is_none()
}

/// The registry entry of a client of the original protocol, stamped with the server's
/// clock; its pid is the one the client sent (`-1` when it sent none).
pub(crate) fn registration(pid: i32, now: Timestamp) -> Participant {
    Participant {
        pid,
        start_ticks: None,
        host: String::new(),
        boot_id: None,
        pid_namespace: None,
        uid: None,
        epoch: 0,
        last_heartbeat: now,
        joined_at: now,
        state: ParticipantState::Active,
        spawned_by: None,
        paused_at: None,
    }
}

/// The participant the request acts for, found in `data`.
pub(crate) fn resolve(data: &LedgerData, claims: &Claims, unclaimed: &Unclaimed) -> Result<Caller> {
    let op = &data.operation_id;
    let fenced = |id: &ParticipantId| Error::Fenced {
        operation: op.clone(),
        participant: id.clone(),
        epoch: claims.session.unwrap_or(0),
    };
    let by_claims = if let Some(session) = claims.session {
        let found = data
            .participants
            .iter()
            .find(|(_, p)| p.epoch == session)
            .map(|(id, p)| Caller {
                id: id.clone(),
                epoch: p.epoch,
            });
        match (found, &claims.participant) {
            (None, Some(id)) => return Err(fenced(id)),
            (None, None) => {
                return Err(Error::SessionClosed {
                    operation: op.clone(),
                    session,
                });
            }
            (Some(found), Some(id)) if found.id != *id => {
                return Err(Error::invalid(
                    format!("session {session}"),
                    format!("it is participant `{}`'s, not `{id}`'s", found.id),
                ));
            }
            (Some(found), _) => Some(found),
        }
    } else if let Some(id) = &claims.participant {
        let p = data.participants.get(id).ok_or_else(|| fenced(id))?;
        Some(Caller {
            id: id.clone(),
            epoch: p.epoch,
        })
    } else {
        None
    };
    if let Unclaimed::FrameOwner(call) = unclaimed {
        let owner = data
            .frame(call)
            .map(|f| f.participant_id.clone())
            .ok_or_else(|| Error::CallNotFound {
                operation: op.clone(),
                call: call.clone(),
            })?;
        if let Some(claimed) = &by_claims
            && claimed.id != owner
        {
            return Err(Error::invalid(
                format!("call `{call}`"),
                format!("it is participant `{owner}`'s, not `{}`'s", claimed.id),
            ));
        }
        let epoch = data.participants.get(&owner).map_or(0, |p| p.epoch);
        return Ok(Caller { id: owner, epoch });
    }
    if let Some(caller) = by_claims {
        return Ok(caller);
    }
    let say_who = "say who sends it with `participantId` or the `Participant-Id` header";
    match unclaimed {
        Unclaimed::Initiator => match data.participants.get(&data.initiator_id) {
            Some(p) if is_original_client(p) => Ok(Caller {
                id: data.initiator_id.clone(),
                epoch: p.epoch,
            }),
            _ => Err(Error::invalid(
                format!("a request for operation `{op}` that names no participant"),
                format!(
                    "its initiator `{}` did not join through this protocol: {say_who}",
                    data.initiator_id
                ),
            )),
        },
        _ => {
            let clients: Vec<(&ParticipantId, &Participant)> = data
                .participants
                .iter()
                .filter(|(_, p)| p.state == ParticipantState::Active && is_original_client(p))
                .collect();
            match clients.as_slice() {
                [(id, p)] => Ok(Caller {
                    id: (*id).clone(),
                    epoch: p.epoch,
                }),
                [] => Err(Error::invalid(
                    format!("a request for operation `{op}` that names no participant"),
                    format!("no participant joined it through this protocol: {say_who}"),
                )),
                several => {
                    let names: Vec<&str> = several.iter().map(|(id, _)| id.as_str()).collect();
                    Err(Error::invalid(
                        format!("a request for operation `{op}` that names no participant"),
                        format!(
                            "several participants joined it through this protocol ({}): {say_who}",
                            names.join(", ")
                        ),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OperationId;
    use crate::model::time;

    fn id(s: &str) -> ParticipantId {
        ParticipantId::parse(s).unwrap()
    }

    fn op_with(clients: &[(&str, u64)]) -> LedgerData {
        let now = time::now();
        let mut data = LedgerData::new(OperationId::parse("op").unwrap(), id("a"), now);
        for (who, epoch) in clients {
            let mut p = registration(100, now);
            p.epoch = *epoch;
            data.participants.insert(id(who), p);
        }
        data
    }

    fn claims(participant: Option<&str>, session: Option<u64>) -> Claims {
        Claims {
            participant: participant.map(id),
            session,
        }
    }

    #[test]
    fn a_request_acts_for_whom_it_names() {
        let data = op_with(&[("a", 1), ("b", 2)]);
        let r = resolve(
            &data,
            &claims(Some("b"), None),
            &Unclaimed::SoleOriginalClient,
        );
        assert_eq!(
            r.unwrap(),
            Caller {
                id: id("b"),
                epoch: 2
            }
        );
        let r = resolve(
            &data,
            &claims(None, Some(1)),
            &Unclaimed::SoleOriginalClient,
        );
        assert_eq!(r.unwrap().id, id("a"));
        // A session of another participant, an unknown session, an unknown participant.
        assert!(
            resolve(
                &data,
                &claims(Some("b"), Some(1)),
                &Unclaimed::SoleOriginalClient
            )
            .is_err()
        );
        assert!(matches!(
            resolve(
                &data,
                &claims(None, Some(9)),
                &Unclaimed::SoleOriginalClient
            ),
            Err(Error::SessionClosed { session: 9, .. })
        ));
        assert!(matches!(
            resolve(
                &data,
                &claims(Some("zz"), None),
                &Unclaimed::SoleOriginalClient
            ),
            Err(Error::Fenced { .. })
        ));
    }

    #[test]
    fn a_request_naming_nobody_is_never_guessed_among_several() {
        let one = op_with(&[("a", 1)]);
        let r = resolve(&one, &Claims::default(), &Unclaimed::SoleOriginalClient);
        assert_eq!(r.unwrap().id, id("a"));
        let two = op_with(&[("a", 1), ("b", 2)]);
        let e = resolve(&two, &Claims::default(), &Unclaimed::SoleOriginalClient).unwrap_err();
        assert!(e.to_string().contains("several participants"), "{e}");
        // `complete` is the initiator's, however many joined.
        let r = resolve(&two, &Claims::default(), &Unclaimed::Initiator);
        assert_eq!(r.unwrap().id, id("a"));
        // A library participant is never taken for an unnamed request.
        let mut library = op_with(&[("a", 1)]);
        library.participants.get_mut(&id("a")).unwrap().uid = Some(0);
        assert!(resolve(&library, &Claims::default(), &Unclaimed::SoleOriginalClient).is_err());
        assert!(resolve(&library, &Claims::default(), &Unclaimed::Initiator).is_err());
    }
}
