//! The connection to an etcd cluster, with our own endpoint rotation.
//!
//! etcd-client balances over every endpoint it was given and keeps sending a share of the
//! requests to a member that died (it never drops one by itself). So every request goes
//! through [`Cluster::run`]: on a transport failure (a dead member, a leader change, a
//! timeout) each configured endpoint is probed, a fresh client is built over the live
//! ones only, and the request is tried again until the cluster's deadline. Members that
//! come back are taken in again at the next probe. Requests given to `run` must be
//! idempotent (or detect their own earlier success): a request that timed out may still
//! have been applied.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How long one request may take before it counts as failed and is tried elsewhere.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request is retried over the live members before it fails as unavailable.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);
/// How long a probe of one endpoint may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Endpoints of an etcd cluster and a client over the live ones; clones share both.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every configured endpoint, as `http://host:port`.
    endpoints: Vec<String>,
    /// The client requests use now, and which endpoints it was built over.
    current: Mutex<(Client, Vec<String>)>,
    /// One probe at a time; the others wait for it and use its client.
    healing: tokio::sync::Mutex<u64>,
    /// How many times the client was rebuilt (for the count `healing` guards).
    generation: std::sync::atomic::AtomicU64,
    /// Requests sent, every attempt counted.
    requests: std::sync::atomic::AtomicU64,
    deadline: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.inner.endpoints)
            .finish()
    }
}

/// `host:port` or `http://host:port` as etcd-client names it; anything else is refused.
pub fn normalise_endpoint(endpoint: &str) -> Result<String> {
    let trimmed = endpoint.trim();
    let rest = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let bad = |reason: &str| Error::invalid(format!("etcd endpoint `{endpoint}`"), reason);
    if rest.is_empty() {
        return Err(bad("is empty"));
    }
    if rest.contains("://") {
        return Err(bad("only http:// endpoints are supported"));
    }
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(bad("must be host:port"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(bad("has no port (host:port)"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("must be host:port with a port from 1 to 65535"));
    }
    Ok(format!("http://{rest}"))
}

/// Endpoints from a comma-separated list (`--etcd`, `TOM_LEDGER_ETCD`).
pub fn parse_endpoints(list: &str) -> Result<Vec<String>> {
    let endpoints: Vec<String> = list
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(normalise_endpoint)
        .collect::<Result<_>>()?;
    if endpoints.is_empty() {
        return Err(Error::invalid(
            format!("etcd endpoints `{list}`"),
            "name at least one host:port",
        ));
    }
    Ok(endpoints)
}

fn options(timeout: Duration) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
}

/// Whether a failed request may succeed on another member or a moment later.
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Internal
                | Code::Aborted
        ),
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => true,
        // A lease that is gone stays gone; a broken keep-alive stream is worth a retry.
        E::LeaseKeepAliveError(message) => !message.contains("not found"),
        _ => false,
    }
}

impl Cluster {
    /// A cluster over `endpoints` (each `host:port` or `http://host:port`). Connects
    /// lazily: an unreachable cluster shows at the first request, as
    /// [`Error::Unavailable`].
    pub async fn connect(endpoints: &[String], deadline: Duration) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| normalise_endpoint(e))
            .collect::<Result<_>>()?;
        if endpoints.is_empty() {
            return Err(Error::invalid(
                "etcd endpoints",
                "name at least one host:port",
            ));
        }
        let client = Self::client_over(&endpoints).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                current: Mutex::new((client, endpoints.clone())),
                endpoints,
                healing: tokio::sync::Mutex::new(0),
                generation: std::sync::atomic::AtomicU64::new(0),
                requests: std::sync::atomic::AtomicU64::new(0),
                deadline,
            }),
        })
    }

    async fn client_over(endpoints: &[String]) -> Result<Client> {
        Client::connect(endpoints, Some(options(REQUEST_TIMEOUT)))
            .await
            .map_err(|e| Error::Unavailable {
                location: endpoints.join(","),
                reason: e.to_string(),
            })
    }

    /// The configured endpoints, as `http://host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The endpoints as one comma-separated list (what `TOM_LEDGER_ETCD` holds).
    pub fn location(&self) -> String {
        self.inner.endpoints.join(",")
    }

    /// The client requests use now (clones share its connections).
    pub fn client(&self) -> Client {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The endpoints the current client sends to.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Run `request` on the current client; after a transient failure, probe the
    /// endpoints, move to the live ones and try again until the deadline. `request`
    /// must be idempotent (see the module notes).
    pub async fn run<T, F, Fut>(&self, request: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.run_within(self.inner.deadline, request).await
    }

    /// [`run`](Self::run) with its own deadline.
    pub async fn run_within<T, F, Fut>(&self, deadline: Duration, mut request: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let until = Instant::now() + deadline;
        loop {
            let generation = self.generation();
            self.inner
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match request(self.client()).await {
                Ok(value) => return Ok(value),
                Err(e) if is_transient(&e) && Instant::now() < until => {
                    tracing::debug!("etcd request failed, trying the live members: {e}");
                    self.heal(generation).await;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(self.unavailable_or_invalid(e)),
            }
        }
    }

    /// Requests sent through [`run`](Self::run) so far, every attempt counted (round
    /// trips of the ledger's writes, for tests and diagnostics; watches and lease
    /// keep-alives are streams of their own and not counted).
    pub fn requests_sent(&self) -> u64 {
        self.inner
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The error a failed request ends in: unavailable for transport failures, invalid
    /// for a request etcd refused (too large, too many operations).
    pub fn unavailable_or_invalid(&self, e: etcd_client::Error) -> Error {
        if is_transient(&e) {
            Error::Unavailable {
                location: self.location(),
                reason: e.to_string(),
            }
        } else {
            Error::invalid(
                format!("etcd request to `{}`", self.location()),
                e.to_string(),
            )
        }
    }

    /// Probe every configured endpoint and rebuild the client over the live ones, unless
    /// another task already did since `seen` (the generation its request failed on).
    /// When none answers the client keeps every endpoint, so the next attempt can find
    /// whichever comes back first.
    pub async fn heal(&self, seen: u64) {
        let mut guard = self.inner.healing.lock().await;
        if self.generation() != seen {
            return;
        }
        let probes = self.inner.endpoints.iter().map(|e| probe(e.clone()));
        let answers = futures_join_all(probes).await;
        let live: Vec<String> = self
            .inner
            .endpoints
            .iter()
            .zip(answers)
            .filter(|(_, alive)| *alive)
            .map(|(e, _)| e.clone())
            .collect();
        let chosen = if live.is_empty() {
            self.inner.endpoints.clone()
        } else {
            live
        };
        if chosen != self.live_endpoints()
            && let Ok(client) = Self::client_over(&chosen).await
        {
            *self.inner.current.lock().unwrap_or_else(|e| e.into_inner()) = (client, chosen);
        }
        *guard += 1;
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The generation of the current client, for [`heal`](Self::heal).
    pub fn current_generation(&self) -> u64 {
        self.generation()
    }
}

/// Whether the member at `endpoint` answers a status request in time.
async fn probe(endpoint: String) -> bool {
    let attempt = async {
        let mut client = Client::connect([endpoint.as_str()], Some(options(PROBE_TIMEOUT)))
            .await
            .ok()?;
        client.status().await.ok()
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT * 2, attempt).await,
        Ok(Some(_))
    )
}

/// Await every future, concurrently, keeping their order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised_and_bad_ones_refused() {
        assert_eq!(
            normalise_endpoint("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalise_endpoint(" http://h:1/ ").unwrap(), "http://h:1");
        for bad in ["", "h", "h:0", "h:99999", "https://h:1", "h:1/x", ":1"] {
            let err = normalise_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        assert_eq!(
            parse_endpoints("a:1,b:2").unwrap(),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(parse_endpoints(" , ").is_err());
    }
}
