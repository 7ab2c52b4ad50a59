//! `POST /sync` on the `[agent] listen` endpoint: start a round now and
//! answer, when it ends, with a JSON summary (round number, files changed,
//! failures counted by kind; never a value). Requests that arrive while a
//! round is running join it: any number of concurrent POSTs cost one round.
//! Refused (403) on a non-loopback listener unless `[agent]
//! allow_remote_sync = true`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::sync::Outcome;

/// Longest a `POST /sync` waits for its round. A round is bounded by
/// `[agent] deadline` (default 2 min) plus its hooks (`hook_timeout` each);
/// this only guards the connection against a wedged agent.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What `POST /sync` answers (no secret values: paths and kinds only).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Sequence number of the round (1 = the agent's first).
    pub round: u64,
    pub ok: bool,
    /// Files written by the round.
    pub files_changed: Vec<String>,
    pub hooks_run: usize,
    /// Number of failures by kind (`vault`, `identity`, `render`, ...).
    pub failures: BTreeMap<String, usize>,
}

impl Summary {
    pub fn of(round: u64, outcome: &Outcome) -> Self {
        let mut failures = BTreeMap::new();
        for e in &outcome.failures {
            *failures.entry(e.kind().as_str().to_owned()).or_insert(0) += 1;
        }
        Self {
            round,
            ok: outcome.ok(),
            files_changed: outcome
                .changed()
                .map(|f| f.path.display().to_string())
                .collect(),
            hooks_run: outcome.hooks_run.len(),
            failures,
        }
    }
}

#[derive(Default)]
struct State {
    /// A round is running (started by any trigger).
    running: bool,
    /// Callers waiting for the end of the running or next round.
    waiters: Vec<oneshot::Sender<Arc<Summary>>>,
}

/// Shared between the agent loop and the endpoint.
pub struct OnDemand {
    state: Mutex<State>,
    wake: Notify,
    /// Whether this listener may serve `POST /sync`.
    allowed: AtomicBool,
}

impl OnDemand {
    pub fn new(allowed: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            allowed: AtomicBool::new(allowed),
        }
    }

    /// Whether `POST /sync` is served: the listener is loopback, or
    /// `allow_remote_sync` is set.
    pub fn allowed_for(listen: std::net::SocketAddr, allow_remote_sync: bool) -> bool {
        listen.ip().is_loopback() || allow_remote_sync
    }

    pub fn set_allowed(&self, allowed: bool) {
        self.allowed.store(allowed, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Each update is a single field change: a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agent starts a round (whatever triggered it): later requests
    /// join it.
    pub fn begin(&self) {
        use futures::FutureExt;
        self.lock().running = true;
        // Everyone waiting now is answered by this round: drop a wake-up
        // they left, or it would start a second round nobody asked for.
        let _ = self.wake.notified().now_or_never();
    }

    /// The round ended: answer everyone who waited for it.
    pub fn finish(&self, summary: Summary) {
        let summary = Arc::new(summary);
        let waiters = {
            let mut s = self.lock();
            s.running = false;
            std::mem::take(&mut s.waiters)
        };
        for w in waiters {
            let _ = w.send(summary.clone());
        }
    }

    /// Resolves when a request wants a round and none is running.
    pub async fn requested(&self) {
        self.wake.notified().await;
    }

    /// Register a caller; wakes the agent unless a round is running.
    fn request(&self) -> oneshot::Receiver<Arc<Summary>> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.lock();
        s.waiters.push(tx);
        if !s.running {
            self.wake.notify_one();
        }
        rx
    }
}

/// Serve `POST /sync` if `req` is one (`None`: not this route).
pub async fn route<B>(
    req: &Request<B>,
    on_demand: Option<&OnDemand>,
) -> Option<Response<Full<Bytes>>> {
    if req.uri().path() != "/sync" {
        return None;
    }
    let on_demand = on_demand?;
    if req.method() != Method::POST {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "use POST /sync"));
    }
    if !on_demand.allowed.load(Ordering::SeqCst) {
        return Some(text(
            StatusCode::FORBIDDEN,
            "POST /sync is refused on a non-loopback listener; set [agent] allow_remote_sync = true to allow it",
        ));
    }
    let rx = on_demand.request();
    Some(match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(summary)) => json(&summary),
        Ok(Err(_)) => text(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
        Err(_) => text(StatusCode::GATEWAY_TIMEOUT, "the round did not end in time"),
    })
}

fn json(summary: &Summary) -> Response<Full<Bytes>> {
    let status = if summary.ok {
        StatusCode::OK
    } else {
        // The round ran but failed: still a JSON answer, flagged.
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let body = serde_json::to_string(summary).unwrap_or_else(|_| "{}".to_owned());
    respond(status, "application/json", body)
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain", message.to_owned())
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn requests_during_a_round_join_it() {
        let d = Arc::new(OnDemand::new(true));
        let first = d.request();
        // The agent picks the request up and starts a round.
        d.requested().await;
        d.begin();
        let second = d.request();
        d.finish(Summary {
            round: 7,
            ok: true,
            ..Summary::default()
        });
        assert_eq!(first.await.unwrap().round, 7);
        assert_eq!(second.await.unwrap().round, 7);
        // No wake-up is left pending for a request that joined a round.
        let pending = tokio::time::timeout(Duration::from_millis(50), d.requested()).await;
        assert!(pending.is_err(), "no extra round requested");
    }

    #[test]
    fn remote_listeners_need_opt_in() {
        let lo: std::net::SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert!(OnDemand::allowed_for(lo, false));
        assert!(!OnDemand::allowed_for(any, false));
        assert!(OnDemand::allowed_for(any, true));
    }
}
