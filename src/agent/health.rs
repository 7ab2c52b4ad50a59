//! The optional `[agent] listen` endpoint: `/healthz` (200 when the last
//! round succeeded within 2 × interval, else 503 with the reason) and
//! `/metrics` (Prometheus text), and `POST /sync` (a round on demand,
//! [`super::on_demand`]). Plain HTTP/1.1 on the configured address,
//! meant for loopback or a pod network; it exposes no secret.

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

/// What `/healthz` reports on.
pub struct Health {
    inner: Mutex<HealthState>,
}

struct HealthState {
    last_success: Option<Instant>,
    last_error: Option<String>,
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

    /// Record a failed round; `reason` must not contain secret values (our
    /// error messages never do).
    pub fn failure(&self, reason: String) {
        if let Ok(mut s) = self.inner.lock() {
            s.last_error = Some(reason);
        }
    }

    /// `Ok(message)` when healthy, `Err(reason)` otherwise.
    pub fn check(&self) -> Result<String, String> {
        let Ok(s) = self.inner.lock() else {
            return Err("health state unavailable".into());
        };
        let limit = s.interval * 2;
        match (s.last_success, &s.last_error) {
            (None, Some(e)) => Err(format!("no successful round yet; last error: {e}")),
            (None, None) => Err("no successful round yet".into()),
            (Some(at), err) if at.elapsed() > limit => Err(format!(
                "last successful round {}s ago (limit {}s){}",
                at.elapsed().as_secs(),
                limit.as_secs(),
                err.as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
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
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. EMFILE: pause instead of spinning on accept().
                    tracing::debug!(error = %e, "health endpoint accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (health, metrics, demand) = (health.clone(), metrics.clone(), on_demand.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (health, metrics, demand) =
                        (health.clone(), metrics.clone(), demand.clone());
                    async move {
                        if let Some(r) = on_demand::route(&req, demand.as_deref()).await {
                            return Ok::<_, Infallible>(r);
                        }
                        Ok(respond(&req, &health, &metrics))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    }))
}

fn respond<B>(req: &Request<B>, health: &Health, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => match health.check() {
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
