//! Finding a ledger server (`Connect::discover`, `tom-ledger --server auto`), in order:
//!
//! 1. `server.json` in the ledger directory, unless the process it names is gone (a
//!    server killed without its clean exit leaves it behind);
//! 2. `http://127.0.0.1:19880/status`;
//! 3. only when asked for, a scan of given hosts or an IPv4 subnet: parallel, with a
//!    concurrency limit and one total deadline (never one host after another).
//!
//! What answers must be a ledger server (`/status` names the service). On this machine
//! the token is read from the server's ledger directory (`server.token`) when none was
//! given.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::process::ProcessIdentity;
use crate::store::remote::{ServerFile, probe};

/// The default port of `tom-ledger serve`.
pub const DEFAULT_PORT: u16 = 19880;

/// Largest subnet a scan walks (a /22).
const MAX_SCAN_HOSTS: usize = 1024;

/// Where and how long to look.
#[derive(Clone, Debug)]
pub struct Discovery {
    /// The ledger directory whose `server.json` is read first.
    pub ledger_dir: Option<PathBuf>,
    /// Hosts (`name`, `name:port`, an IPv4 address) or IPv4 subnets (`10.0.0.0/24`) to
    /// scan when the first two steps find nothing; empty: no scan.
    pub scan: Vec<String>,
    /// Port scanned on hosts given without one.
    pub port: u16,
    /// Probes under way at once during a scan.
    pub concurrency: usize,
    /// Longest time of one probe.
    pub probe_timeout: Duration,
    /// Longest time of the whole scan.
    pub scan_deadline: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            ledger_dir: None,
            scan: Vec::new(),
            port: DEFAULT_PORT,
            concurrency: 32,
            probe_timeout: Duration::from_millis(500),
            scan_deadline: Duration::from_secs(3),
        }
    }
}

/// A server found, and the token found beside its ledger on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub url: String,
    pub token: Option<String>,
}

/// The token file a server writes into its ledger directory.
pub fn token_beside(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("server.token")).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// The url of `server.json` in `dir`, if its process still runs.
pub fn from_server_file(dir: &Path) -> Option<String> {
    let file = ServerFile::read_file(&ServerFile::path_in(dir)).ok()?;
    let pid = i32::try_from(file.pid).ok()?;
    ProcessIdentity::of(pid)?;
    Some(file.url)
}

/// Find a server as the module notes say.
pub async fn discover(options: &Discovery) -> Result<Found> {
    if let Some(dir) = &options.ledger_dir
        && let Some(url) = from_server_file(dir)
        && probe(&url, options.probe_timeout).await.is_ok()
    {
        return Ok(Found {
            url,
            token: token_beside(dir),
        });
    }
    let local = format!("http://127.0.0.1:{DEFAULT_PORT}");
    if let Ok(status) = probe(&local, options.probe_timeout).await {
        let token = status
            .base_path
            .as_deref()
            .map(Path::new)
            .and_then(token_beside);
        return Ok(Found { url: local, token });
    }
    if !options.scan.is_empty() {
        let candidates = scan_candidates(&options.scan, options.port)?;
        if let Some(url) = scan(candidates, options).await {
            return Ok(Found { url, token: None });
        }
    }
    Err(Error::Unavailable {
        location: "discovery".to_string(),
        reason: match &options.ledger_dir {
            Some(dir) => format!(
                "no live server.json in `{}`, nothing at {local}{}",
                dir.display(),
                if options.scan.is_empty() {
                    ""
                } else {
                    ", none in the scan"
                }
            ),
            None => format!("nothing at {local}"),
        },
    })
}

/// The urls a scan probes; a bad host or a subnet too large is an error naming it.
pub fn scan_candidates(specs: &[String], port: u16) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for spec in specs {
        if let Some((net, bits)) = spec.split_once('/') {
            let bad = |why: &str| Error::invalid(format!("subnet `{spec}`"), why.to_string());
            let net: Ipv4Addr = net.parse().map_err(|_| bad("not an IPv4 address"))?;
            let bits: u32 = bits.parse().map_err(|_| bad("prefix is not a number"))?;
            if !(1..=32).contains(&bits) {
                return Err(bad("prefix must be 1 to 32"));
            }
            let size = 1u64 << (32 - bits);
            if size as usize > MAX_SCAN_HOSTS {
                return Err(bad(&format!("more than {MAX_SCAN_HOSTS} hosts")));
            }
            let first = u32::from(net) & (u32::MAX.checked_shl(32 - bits).unwrap_or(0));
            for n in 0..size as u32 {
                let ip = Ipv4Addr::from(first.wrapping_add(n));
                out.push(format!("http://{ip}:{port}"));
            }
        } else {
            if spec.is_empty() || spec.contains(['/', '@', '?', '#', ' ']) {
                return Err(Error::invalid(
                    format!("host `{spec}`"),
                    "expected HOST or HOST:PORT",
                ));
            }
            let host = if spec.contains(':') {
                spec.clone()
            } else {
                format!("{spec}:{port}")
            };
            out.push(format!("http://{host}"));
        }
        if out.len() > MAX_SCAN_HOSTS {
            return Err(Error::invalid(
                "scan",
                format!("more than {MAX_SCAN_HOSTS} hosts in all"),
            ));
        }
    }
    Ok(out)
}

/// Probe `candidates` in parallel; the first ledger server to answer wins.
async fn scan(candidates: Vec<String>, options: &Discovery) -> Option<String> {
    let timeout = options.probe_timeout;
    let probes = futures_util::stream::iter(candidates)
        .map(|url| async move { probe(&url, timeout).await.ok().map(|_| url) })
        .buffer_unordered(options.concurrency.max(1));
    let first = probes.filter_map(|found| async move { found }).boxed();
    tokio::time::timeout(options.scan_deadline, first.into_future())
        .await
        .ok()
        .and_then(|(found, _)| found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_of_hosts_and_subnets() {
        let got = scan_candidates(&["10.1.2.0/30".into(), "box".into(), "h:7".into()], 9).unwrap();
        assert_eq!(
            got,
            [
                "http://10.1.2.0:9",
                "http://10.1.2.1:9",
                "http://10.1.2.2:9",
                "http://10.1.2.3:9",
                "http://box:9",
                "http://h:7"
            ]
        );
        let e = scan_candidates(&["10.0.0.0/8".into()], 9).unwrap_err();
        assert!(e.to_string().contains("`10.0.0.0/8`"), "{e}");
        assert!(scan_candidates(&["a/b".into()], 9).is_err());
        assert!(scan_candidates(&["x@y".into()], 9).is_err());
    }
}
