//! The accept loop: HTTP/1 connections with a header read timeout and a bounded header
//! buffer (a client that sends its request slowly, or never, is dropped), and a graceful
//! shutdown that lets requests in flight finish within a bound.
//!
//! `axum::serve` has no header timeout (it runs hyper without a timer), so connections
//! are served here with hyper's own HTTP/1 builder.
//!
//! hyper's read buffer limit is no exact bound on a request head (a head that arrives in
//! one read is parsed whatever its size), so the head's size is checked on every request
//! as well: larger than [`ConnectionLimits::header_bytes`] gets 431 and a JSON error line.
//! hyper's own limit stays as a backstop, at twice that.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Connection settings.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Time a client has to send its request headers (also an idle keep-alive's life).
    pub header_time: Duration,
    /// Largest request head (request line and headers); larger gets 431.
    pub header_bytes: usize,
    /// Connections served at once; more wait in the kernel's backlog.
    pub connections: usize,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_time: Duration::from_secs(10),
            header_bytes: 64 * 1024,
            connections: 4096,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serve `app` on `listener` until `shutdown` turns true, then close idle connections,
/// let requests in flight finish (bounded by the grace) and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let head_limit = limits.header_bytes;
    let app = app.layer(middleware::from_fn(move |request: Request, next: Next| {
        refuse_large_head(head_limit, request, next)
    }));
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: pause instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = shutdown.clone();
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_time)
                .max_buf_size(limits.header_bytes.saturating_mul(2).max(8192))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drained)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

/// The size of a request's head as sent: request line, header lines, blank line.
pub fn head_bytes(request: &Request) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |p| p.as_str().len());
    let request_line = request.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + 2;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    request_line + headers + 2
}

/// 431 for a request whose head is larger than `limit` bytes.
async fn refuse_large_head(limit: usize, request: Request, next: Next) -> Response {
    let size = head_bytes(&request);
    if size > limit {
        return super::errors::json_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("request head of {size} bytes is larger than the limit of {limit} bytes"),
        );
    }
    next.run(request).await
}
