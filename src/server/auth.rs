//! The bearer token every request must carry: generated into the ledger directory
//! (mode 0600) unless given in a file, compared in constant time. A missing or wrong
//! token gets the same 401 whatever the path, so it tells nothing about which
//! operations exist.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

use super::errors::json_error;

/// The name of the generated token file in the ledger directory.
pub const TOKEN_FILE: &str = "server.token";

/// Bytes of randomness in a generated token (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 32;

/// Shortest token accepted from a file.
const MIN_TOKEN_LEN: usize = 16;

/// Paths answered without a token: discovery's `/status` and `/health` (they name the
/// service, never an operation). The status page adds its own (`page::PUBLIC_PATHS`:
/// the page and its assets, which hold no data).
pub const PUBLIC_PATHS: &[&str] = &["/status", "/health"];

/// Whether and how requests are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// Every request but the public ones needs `Authorization: Bearer {token}`.
    Token(Arc<str>),
    /// No token (`serve --no-auth`, loopback only).
    Open,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Auth::Token(..)"),
            Auth::Open => f.write_str("Auth::Open"),
        }
    }
}

impl Auth {
    /// Whether `presented` (the `Authorization` header) carries the token.
    fn admits(&self, presented: Option<&[u8]>) -> bool {
        match self {
            Auth::Open => true,
            Auth::Token(token) => {
                let Some(value) = presented else {
                    return false;
                };
                let Some(given) = value.strip_prefix(b"Bearer ") else {
                    return false;
                };
                // Length is no secret (every generated token has the same); the bytes
                // are compared without an early exit.
                given.ct_eq(token.as_bytes()).into()
            }
        }
    }
}

/// `--no-auth` is for loopback only: anyone who can reach another address could
/// register temp resources that a participant's process would delete.
pub fn check_open_bind(ip: IpAddr) -> Result<()> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("--no-auth with bind address `{ip}`"),
            "a server without a token may only listen on a loopback address",
        ))
    }
}

/// A fresh random token, as hex.
pub fn generate_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the generated token of a ledger directory lives.
pub fn token_path(ledger_dir: &Path) -> PathBuf {
    ledger_dir.join(TOKEN_FILE)
}

/// Write a fresh token into `path` with mode 0600, replacing an older one (a token file
/// left by an earlier server is no secret worth keeping). The file is created beside
/// and renamed over, so a reader never sees half a token.
pub fn write_token(path: &Path) -> Result<String> {
    let token = generate_token();
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| Error::io("create token file", &tmp, e))?;
    file.write_all(token.as_bytes())
        .map_err(|e| Error::io("write token file", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename token file", path, e))?;
    Ok(token)
}

/// Read a token from a file (`--token-file`, a client's token); surrounding whitespace
/// is dropped.
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read token file", path, e))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(Error::invalid(
            format!("token file `{}`", path.display()),
            format!("a token is at least {MIN_TOKEN_LEN} printable characters without spaces"),
        ));
    }
    Ok(token.to_string())
}

/// The layer in front of every route: 401, the same for every path, without the token.
pub async fn require_token(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if PUBLIC_PATHS.contains(&path) || super::page::PUBLIC_PATHS.contains(&path) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if auth.admits(presented) {
        next.run(request).await
    } else {
        let mut response = json_error(StatusCode::UNAUTHORIZED, "unauthorized");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let auth = Auth::Token(Arc::from("0123456789abcdef0123"));
        assert!(auth.admits(Some(b"Bearer 0123456789abcdef0123")));
        assert!(!auth.admits(Some(b"Bearer 0123456789abcdef0124")));
        assert!(!auth.admits(Some(b"Bearer 0123456789abcdef012")));
        assert!(!auth.admits(Some(b"Basic 0123456789abcdef0123")));
        assert!(!auth.admits(Some(b"0123456789abcdef0123")));
        assert!(!auth.admits(None));
        assert!(Auth::Open.admits(None));
    }

    #[test]
    fn generated_tokens_are_long_hex_and_differ() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), TOKEN_BYTES * 2);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn no_auth_is_refused_off_loopback() {
        assert!(check_open_bind("127.0.0.1".parse().unwrap()).is_ok());
        assert!(check_open_bind("::1".parse().unwrap()).is_ok());
        let e = check_open_bind("0.0.0.0".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("`0.0.0.0`"), "{e}");
    }
}
