//! The optional `[agent] listen` endpoint: `/healthz` (200 when the last
//! round succeeded within 2 × interval, else 503 with the failure kinds),
//! `/metrics` (Prometheus text), and `POST /sync` (a round on demand,
//! [`super::on_demand`]). Plain HTTP/1.1 on the configured address,
//! meant for loopback or a pod network; it exposes no secret.
//!
//! Hostile clients cannot starve the agent: a connection gets
//! [`HEADER_TIMEOUT`] to send its request headers and [`CONNECTION_DEADLINE`]
//! in all (one request per connection, no keep-alive), request headers are
//! bounded ([`MAX_REQUEST_BYTES`], [`MAX_HEADERS`]), and at most
//! [`MAX_CONNECTIONS`] are open at once: a new one closes the oldest, so
//! idle sockets can neither exhaust kvsync's file descriptors nor lock a
//! probe out. `/healthz` names only failure kinds (`vault`, `write`, ...);
//! the messages (secret and vault names, hook stderr) are in the logs, and
//! behind `/healthz?verbose` for loopback clients only.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::on_demand::{self, OnDemand};

/// Pause after a failed `accept()` (e.g. out of file descriptors) so a
/// persistent error cannot spin the CPU.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of a connection, whatever it does.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections open at once; a new one closes the oldest. Probes and
/// scrapers need a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// Read buffer of a connection: the request line and headers must fit
/// (hyper's minimum).
pub const MAX_REQUEST_BYTES: usize = 8192;
/// Request headers accepted.
pub const MAX_HEADERS: usize = 32;

/// What `/healthz` reports on.
pub struct Health {
    inner: Mutex<HealthState>,
}

struct HealthState {
    last_success: Option<Instant>,
    /// The last failed round: its failure kinds (sorted, deduplicated) and
    /// the full messages (verbose only).
    last_error: Option<(Vec<String>, String)>,
    interval: Duration,
}

impl Health {
    pub fn new(interval: Duration) -> Self {
        Self {
            inner: Mutex::new(HealthState {
                last_success: None,
                last_error: None,
                interval,
            }),
        }
    }

    pub fn set_interval(&self, interval: Duration) {
        if let Ok(mut s) = self.inner.lock() {
            s.interval = interval;
        }
    }

    pub fn success(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.last_success = Some(Instant::now());
            s.last_error = None;
        }
    }

    /// Record a failed round: its failure kinds (`vault`, `write`, ...)
    /// and the full messages, shown only to `/healthz?verbose` on loopback
    /// (they must not contain secret values; our error messages never do).
    pub fn failure<'a>(&self, kinds: impl IntoIterator<Item = &'a str>, details: String) {
        let mut kinds: Vec<String> = kinds.into_iter().map(str::to_owned).collect();
        kinds.sort();
        kinds.dedup();
        if let Ok(mut s) = self.inner.lock() {
            s.last_error = Some((kinds, details));
        }
    }

    /// `Ok(message)` when healthy, `Err(reason)` otherwise; the reason
    /// names failure kinds only unless `verbose`.
    pub fn check(&self, verbose: bool) -> Result<String, String> {
        let Ok(s) = self.inner.lock() else {
            return Err("health state unavailable".into());
        };
        let limit = s.interval * 2;
        let error = s.last_error.as_ref().map(|(kinds, details)| {
            if verbose {
                format!("last error: {details}")
            } else {
                format!(
                    "last failures: {} (details in the logs, or /healthz?verbose from loopback)",
                    kinds.join(", ")
                )
            }
        });
        match (s.last_success, &error) {
            (None, Some(e)) => Err(format!("no successful round yet; {e}")),
            (None, None) => Err("no successful round yet".into()),
            (Some(at), err) if at.elapsed() > limit => Err(format!(
                "last successful round {}s ago (limit {}s){}",
                at.elapsed().as_secs(),
                limit.as_secs(),
                err.as_ref().map(|e| format!("; {e}")).unwrap_or_default()
            )),
            (Some(at), _) => Ok(format!(
                "ok: last successful round {}s ago",
                at.elapsed().as_secs()
            )),
        }
    }
}

/// Bind `addr` and serve until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    on_demand: Option<Arc<OnDemand>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    Ok(tokio::spawn(async move {
        // Open connections, oldest first; aborting a task closes its socket.
        let mut open: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. EMFILE: pause instead of spinning on accept().
                    tracing::debug!(error = %e, "health endpoint accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            open.retain(|task| !task.is_finished());
            while open.len() >= MAX_CONNECTIONS {
                if let Some(oldest) = open.pop_front() {
                    oldest.abort();
                }
            }
            let _ = stream.set_nodelay(true);
            let (health, metrics, demand) = (health.clone(), metrics.clone(), on_demand.clone());
            let answering = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let answering_conn = answering.clone();
            open.push_back(tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (health, metrics, demand) =
                        (health.clone(), metrics.clone(), demand.clone());
                    answering.store(true, std::sync::atomic::Ordering::Relaxed);
                    async move {
                        if let Some(r) = on_demand::route(&req, demand.as_deref()).await {
                            return Ok::<_, Infallible>(r);
                        }
                        Ok(respond(&req, peer, &health, &metrics))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .max_buf_size(MAX_REQUEST_BYTES)
                    .max_headers(MAX_HEADERS)
                    .serve_connection(io, svc);
                tokio::pin!(conn);
                // A request that arrived in time may take long to answer
                // (`POST /sync` waits for its round): it gets the on-demand
                // bound instead of the connection deadline.
                if tokio::time::timeout(CONNECTION_DEADLINE, &mut conn)
                    .await
                    .is_err()
                    && answering_conn.load(std::sync::atomic::Ordering::Relaxed)
                {
                    let _ = tokio::time::timeout(on_demand::ANSWER_TIMEOUT, conn).await;
                }
            }));
        }
    }))
}

fn respond<B>(
    req: &Request<B>,
    peer: SocketAddr,
    health: &Health,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let verbose = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "verbose"));
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" if verbose && !peer.ip().to_canonical().is_loopback() => (
            StatusCode::FORBIDDEN,
            "text/plain",
            "/healthz?verbose is served to loopback clients only".into(),
        ),
        "/healthz" => match health.check(verbose) {
            Ok(msg) => (StatusCode::OK, "text/plain", msg),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", reason),
        },
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}
