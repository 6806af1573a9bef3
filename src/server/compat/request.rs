//! Reading the original's requests: a JSON object body sent as `application/json` (as
//! its client sends it; anything else is refused, so a web page cannot post to a local
//! server without a preflight that the server never grants), fields under the original's
//! names, each checked for its type and validated as an id before it reaches the store.
//! A wrong field is a 400 naming the field and the value.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::ids::{CallId, OperationId, ParticipantId};

use super::super::errors::ApiError;

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Longest piece of a wrong value quoted back in an error.
const QUOTED: usize = 64;

/// The fields of one request.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// The body of a POST: empty (no fields) or a JSON object sent as `application/json`.
    pub fn from_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Fields> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let is_json = content_type.as_deref().is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type `{}`: expected application/json",
                    quote(content_type.as_deref().unwrap_or("none"))
                ),
            ));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields { map }),
            Ok(other) => Err(ApiError::bad_request(format!(
                "invalid json body: expected an object, found `{}`",
                quote(&other.to_string())
            ))),
            Err(e) => Err(ApiError::bad_request(format!("invalid json body: {e}"))),
        }
    }

    /// The query of a GET (`?operationId=...`): every value is a string.
    pub fn from_query(query: HashMap<String, String>) -> Fields {
        Fields {
            map: query
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        }
    }

    /// Merge `other` in; a field given in both must be the same.
    pub fn merged(mut self, other: Fields) -> ApiResult<Fields> {
        for (k, v) in other.map {
            match self.map.get(&k) {
                Some(mine) if *mine != v => {
                    return Err(ApiError::bad_request(format!(
                        "field `{k}` differs between the query and the body"
                    )));
                }
                _ => {
                    self.map.insert(k, v);
                }
            }
        }
        Ok(self)
    }

    /// `operationId`, required and validated.
    pub fn operation(&self) -> ApiResult<OperationId> {
        let raw = self.required_string("operationId")?;
        Ok(OperationId::parse(raw)?)
    }

    /// `callId`, required and validated.
    pub fn call(&self) -> ApiResult<CallId> {
        let raw = self.required_string("callId")?;
        Ok(CallId::parse(raw)?)
    }

    /// A participant id under `name`, validated when given.
    pub fn participant(&self, name: &str) -> ApiResult<Option<ParticipantId>> {
        match self.string(name)? {
            None => Ok(None),
            Some(raw) => Ok(Some(ParticipantId::parse(raw)?)),
        }
    }

    /// A string field; `null` counts as absent.
    pub fn string(&self, name: &str) -> ApiResult<Option<&str>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong(name, "a string", other)),
        }
    }

    pub fn required_string(&self, name: &str) -> ApiResult<&str> {
        self.string(name)?.ok_or_else(|| missing(name))
    }

    pub fn bool(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong(name, "true or false", other)),
        }
    }

    /// An integer field within `range`.
    pub fn int(&self, name: &str, range: std::ops::RangeInclusive<i64>) -> ApiResult<Option<i64>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if range.contains(&i) => Ok(Some(i)),
                _ => Err(ApiError::from(Error::invalid(
                    format!("field `{name}` = `{}`", quote(&n.to_string())),
                    format!(
                        "expected a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                ))),
            },
            // The query form of a number.
            Some(Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(i) if range.contains(&i) => Ok(Some(i)),
                _ => Err(wrong(name, "a whole number", &Value::String(s.clone()))),
            },
            Some(other) => Err(wrong(name, "a whole number", other)),
        }
    }
}

/// A value quoted back in a message: at most [`QUOTED`] characters, one line.
pub(crate) fn quote(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(QUOTED)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.chars().count() > QUOTED {
        out.push('…');
    }
    out
}

fn missing(name: &str) -> ApiError {
    ApiError::from(Error::invalid(
        "request body",
        format!("field `{name}` is missing"),
    ))
}

fn wrong(name: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::from(Error::invalid(
        format!("field `{name}` = `{}`", quote(&found.to_string())),
        format!("expected {expected}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> ApiResult<Fields> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        Fields::from_body(&headers, &Bytes::from(body.to_string()))
    }

    #[test]
    fn fields_are_typed_and_ids_validated() {
        let f = json(r#"{"operationId":"op-1","callId":"../x","n":5,"b":true}"#).unwrap();
        assert_eq!(f.operation().unwrap().as_str(), "op-1");
        let e = f.call().unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("`../x`"), "{}", e.message);
        assert_eq!(f.int("n", 0..=9).unwrap(), Some(5));
        assert!(f.int("n", 0..=4).is_err());
        assert_eq!(f.bool("b").unwrap(), Some(true));
        let e = f.string("n").unwrap_err();
        assert!(e.message.contains("field `n` = `5`"), "{}", e.message);
        let e = json("{}").unwrap().operation().unwrap_err();
        assert!(
            e.message.contains("`operationId` is missing"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bodies_must_be_json_objects_sent_as_json() {
        assert!(
            json("[1,2]")
                .unwrap_err()
                .message
                .contains("expected an object")
        );
        assert!(
            json("{\"a\":")
                .unwrap_err()
                .message
                .starts_with("invalid json body")
        );
        let plain = Fields::from_body(&HeaderMap::new(), &Bytes::from_static(b"{}"));
        assert_eq!(
            plain.unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert!(Fields::from_body(&HeaderMap::new(), &Bytes::new()).is_ok());
    }

    #[test]
    fn quoted_values_are_short_single_lines() {
        let long = "x".repeat(500) + "\n";
        let q = quote(&long);
        assert_eq!(q.chars().count(), QUOTED + 1);
        assert!(!quote("a\nb").contains('\n'));
    }
}
