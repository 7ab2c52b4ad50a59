//! Scripted faults, injected latency and the per-request guard that applies
//! them. Owns the error-body shapes of both services (PROTOCOL.md §1/§2 for
//! the metadata services, §5 for Key Vault), so every error the emulator
//! sends — injected or real — looks like Azure's.
//!
//! Invariants: faults are consumed in the order they were pushed (the first
//! queued fault that matches a request is used, and its `times` is
//! decremented); latency is applied exactly once per request, before
//! authentication (TOOLING.md "Measuring"). Never touches secrets or tokens.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::state::Shared;

/// Which emulated service a fault, latency or counter applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Arc HIMDS: the plain-HTTP port.
    Himds,
    /// Azure VM IMDS: its own plain-HTTP port.
    Imds,
    /// Entra ID token endpoint (workload identity): its own HTTPS port.
    Login,
    /// Key Vault data plane: the HTTPS port.
    #[default]
    #[serde(alias = "kv", alias = "vault")]
    KeyVault,
}

/// One scripted fault: the next `times` requests to `service` whose path
/// contains `path_contains` get `status` with a proper error body.
///
/// * `code`: the error code. For Key Vault it defaults from the status
///   (401 `Unauthorized`, 403 `Forbidden`, 404 `SecretNotFound`, 429
///   `Throttled`, 5xx `InternalServerError`/`ServiceUnavailable`). A 403 whose
///   `code` is a specific reason (`ForbiddenByRbac`, `ForbiddenByFirewall`,
///   `AccessDenied`, `ForbiddenByPolicy`, `SecretDisabled`) and no
///   `inner_code` is sent as Azure does: code `Forbidden`, innererror = the
///   reason. For HIMDS it is the `error` field (default `server_error`).
/// * `retry_after`: seconds, sent as a `Retry-After` header.
/// * `delay`: extra wait before answering (timeout tests: a long delay makes
///   the service hang).
/// * `status` 200 means "no error": only `delay` is applied, then the request
///   is served normally (a slow but successful answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub service: Service,
    pub path_contains: Option<String>,
    pub status: u16,
    pub code: Option<String>,
    pub inner_code: Option<String>,
    pub retry_after: Option<u64>,
    pub delay: Option<Duration>,
    pub times: usize,
}

impl Default for Fault {
    fn default() -> Self {
        Self {
            service: Service::KeyVault,
            path_contains: None,
            status: 500,
            code: None,
            inner_code: None,
            retry_after: None,
            delay: None,
            times: 1,
        }
    }
}

/// A very long delay used by [`Fault::hang`]: longer than any client timeout
/// a test would configure (kvsync's own REMOTE_REQUEST_TIMEOUT is 30 s).
pub const HANG_DELAY: Duration = Duration::from_secs(3600);

impl Fault {
    /// A Key Vault fault with the given status for the next `times` requests.
    pub fn kv(status: u16, times: usize) -> Self {
        Self {
            status,
            times,
            ..Self::default()
        }
    }

    /// The next `times` requests to `service` never get an answer (until
    /// [`HANG_DELAY`] passes): for client timeout tests.
    pub fn hang(service: Service, times: usize) -> Self {
        Self {
            service,
            status: 503,
            delay: Some(HANG_DELAY),
            times,
            ..Self::default()
        }
    }

    fn matches(&self, service: Service, path: &str) -> bool {
        self.service == service
            && self
                .path_contains
                .as_deref()
                .is_none_or(|needle| path.contains(needle))
    }
}

/// FIFO of pending faults.
#[derive(Debug, Default)]
pub struct FaultQueue {
    queue: VecDeque<Fault>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.queue.push_back(fault);
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes one use of the first fault matching the request, if any.
    pub fn take(&mut self, service: Service, path: &str) -> Option<Fault> {
        let idx = self.queue.iter().position(|f| f.matches(service, path))?;
        let fault = self.queue.get_mut(idx)?;
        fault.times = fault.times.saturating_sub(1);
        let taken = fault.clone();
        if fault.times == 0 {
            self.queue.remove(idx);
        }
        Some(taken)
    }
}

/// Middleware for every routed request of one service: count, wait the
/// injected latency, then apply a matching fault (or pass on).
pub async fn guard(
    State((shared, service)): State<(Arc<Shared>, Service)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    shared.count_request(service, &path);
    let latency = shared.latency(service);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = shared.take_fault(service, &path);
    match fault {
        None => next.run(req).await,
        Some(fault) => {
            if let Some(delay) = fault.delay {
                tokio::time::sleep(delay).await;
            }
            if fault.status == 200 {
                next.run(req).await
            } else {
                fault_response(service, &fault)
            }
        }
    }
}

fn fault_response(service: Service, fault: &Fault) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match service {
        Service::KeyVault => {
            let (code, inner) = kv_codes(fault);
            kv_error(
                status,
                &code,
                "Injected fault (kvsync-fake).",
                inner.as_deref(),
            )
        }
        Service::Himds | Service::Imds | Service::Login => {
            let code = fault
                .code
                .clone()
                .unwrap_or_else(|| "server_error".to_owned());
            metadata_error(status, &code, "Injected fault (kvsync-fake).")
        }
    };
    if let Some(secs) = fault.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Reasons Azure sends as the innererror of a 403 `Forbidden`.
const FORBIDDEN_REASONS: &[&str] = &[
    "ForbiddenByRbac",
    "ForbiddenByFirewall",
    "ForbiddenByPolicy",
    "AccessDenied",
    "SecretDisabled",
    "CertificateDisabled",
];

fn kv_codes(fault: &Fault) -> (String, Option<String>) {
    match (&fault.code, &fault.inner_code) {
        (Some(code), None) if fault.status == 403 && FORBIDDEN_REASONS.contains(&code.as_str()) => {
            ("Forbidden".to_owned(), Some(code.clone()))
        }
        (Some(code), inner) => (code.clone(), inner.clone()),
        (None, inner) => (default_kv_code(fault.status).to_owned(), inner.clone()),
    }
}

fn default_kv_code(status: u16) -> &'static str {
    match status {
        400 => "BadParameter",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "SecretNotFound",
        409 => "Conflict",
        429 => "Throttled",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    }
}

/// A Key Vault error: `{"error":{"code","message","innererror":{"code"}}}`
/// (PROTOCOL.md §5).
pub fn kv_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let (Some(inner), Some(obj)) = (inner, error.as_object_mut()) {
        obj.insert("innererror".to_owned(), json!({ "code": inner }));
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// A metadata-service (HIMDS/IMDS) error: `{"error","error_description"}`
/// (PROTOCOL.md §1, §2).
pub fn metadata_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": [status.as_u16()],
    });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn faults_are_consumed_in_order_and_by_match() {
        let mut q = FaultQueue::default();
        q.push(Fault {
            path_contains: Some("/secrets/a".into()),
            status: 404,
            ..Fault::default()
        });
        q.push(Fault {
            status: 429,
            times: 2,
            ..Fault::default()
        });
        assert_eq!(q.take(Service::KeyVault, "/secrets/b").unwrap().status, 429);
        assert_eq!(q.take(Service::Himds, "/secrets/a"), None);
        assert_eq!(q.take(Service::KeyVault, "/secrets/a").unwrap().status, 404);
        assert_eq!(q.take(Service::KeyVault, "/secrets/a").unwrap().status, 429);
        assert!(q.take(Service::KeyVault, "/secrets/a").is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn forbidden_reason_becomes_innererror() {
        let f = Fault {
            status: 403,
            code: Some("ForbiddenByRbac".into()),
            ..Fault::default()
        };
        assert_eq!(
            kv_codes(&f),
            ("Forbidden".into(), Some("ForbiddenByRbac".into()))
        );
        let f = Fault {
            status: 429,
            ..Fault::default()
        };
        assert_eq!(kv_codes(&f), ("Throttled".into(), None));
    }
}
