//! Admin HTTP API of the standalone binary, on the HIMDS port under
//! `/admin/` (documented in fake/README.md): set/delete secrets, read and
//! reset counters, push faults, set latency, invalidate tokens.
//!
//! Invariants: answers only loopback peers (403 otherwise); admin requests
//! are not counted and get no injected latency or faults; secret values are
//! never echoed back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use crate::faults::{Fault, Service};
use crate::issuer::{CertContentType, CertKey, CertOptions, DEFAULT_VALIDITY};
use crate::state::{Counters, Shared, lock};
use crate::store::SecretOptions;

/// The admin routes (merged into the HIMDS router by the binary).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/admin/secrets/{name}",
            put(put_secret).delete(delete_secret),
        )
        .route("/admin/secrets/{name}/{version}/enabled", put(set_enabled))
        .route("/admin/certificates/{name}", post(issue_certificate))
        .route(
            "/admin/certificates/{name}/exportable",
            put(set_cert_exportable),
        )
        .route("/admin/certificates-ca", get(cert_root))
        .route("/admin/counters", get(counters))
        .route("/admin/counters/reset", post(reset_counters))
        .route("/admin/faults", post(push_fault).delete(clear_faults))
        .route("/admin/latency", post(set_latency))
        .route("/admin/tokens/invalidate", post(invalidate_tokens))
        .route(
            "/admin/challenge-path",
            put(set_challenge_path).delete(clear_challenge_path),
        )
        .layer(axum::middleware::from_fn(loopback_only))
        .with_state(shared)
}

async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "admin API is loopback-only\n").into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": msg.into() })),
    )
        .into_response()
}

/// Largest secret value Key Vault stores: 25 KB (Azure Key Vault service
/// limits, "Secret value size limit: 25k bytes"; PROTOCOL.md §5).
const MAX_VALUE_BYTES: usize = 25 * 1024;

/// Query of `PUT /admin/secrets/{name}`: optional properties of the version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    enabled: Option<bool>,
    exp: Option<i64>,
    nbf: Option<i64>,
    /// Tags as `k1:v1;k2:v2`.
    tags: Option<String>,
}

async fn put_secret(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<PutQuery>,
    body: String,
) -> Response {
    if name.is_empty()
        || name.len() > 127
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return bad_request("secret names are 1-127 characters of 0-9, a-z, A-Z and '-'");
    }
    if body.len() > MAX_VALUE_BYTES {
        return bad_request(format!("secret values are at most {MAX_VALUE_BYTES} bytes"));
    }
    let tags = q.tags.map(|t| {
        t.split(';')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once(':') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.to_owned(), String::new()),
            })
            .collect::<BTreeMap<_, _>>()
    });
    let opts = SecretOptions {
        content_type: q.content_type,
        tags,
        enabled: q.enabled.unwrap_or(true),
        expires: q.exp,
        not_before: q.nbf,
    };
    let version = lock(&shared.store).set(&name, &body, opts);
    let id = format!("{}/secrets/{name}/{version}", shared.vault_base);
    axum::Json(json!({ "name": name, "version": version, "id": id })).into_response()
}

async fn delete_secret(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    if lock(&shared.store).delete(&name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn set_enabled(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
    body: String,
) -> Response {
    let enabled = match body.trim() {
        "true" => true,
        "false" => false,
        _ => return bad_request("body must be true or false"),
    };
    if lock(&shared.store).set_enabled(&name, &version, enabled) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn counters(State(shared): State<Arc<Shared>>) -> axum::Json<Counters> {
    axum::Json(lock(&shared.counters).clone())
}

/// `PUT /admin/challenge-path` (body: the path, as text): HIMDS challenges
/// name it instead of a new key file, and reject every key (hostile-listener
/// tests from scripts). `DELETE` goes back to real key files.
async fn set_challenge_path(State(shared): State<Arc<Shared>>, body: String) -> StatusCode {
    let path = body.trim_end_matches(['\r', '\n']);
    if path.is_empty() {
        return StatusCode::BAD_REQUEST;
    }
    lock(&shared.settings).challenge_path = Some(std::path::PathBuf::from(path));
    StatusCode::NO_CONTENT
}

async fn clear_challenge_path(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.settings).challenge_path = None;
    StatusCode::NO_CONTENT
}

async fn reset_counters(State(shared): State<Arc<Shared>>) -> StatusCode {
    *lock(&shared.counters) = Counters::default();
    StatusCode::NO_CONTENT
}

/// JSON body of `POST /admin/faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    #[serde(default)]
    service: Service,
    path_contains: Option<String>,
    status: u16,
    code: Option<String>,
    inner_code: Option<String>,
    retry_after: Option<u64>,
    delay_ms: Option<u64>,
    times: Option<usize>,
}

async fn push_fault(
    State(shared): State<Arc<Shared>>,
    body: Result<axum::Json<FaultBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(f) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(e.body_text()),
    };
    lock(&shared.faults).push(Fault {
        service: f.service,
        path_contains: f.path_contains,
        status: f.status,
        code: f.code,
        inner_code: f.inner_code,
        retry_after: f.retry_after,
        delay: f.delay_ms.map(Duration::from_millis),
        times: f.times.unwrap_or(1),
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.faults).clear();
    StatusCode::NO_CONTENT
}

/// JSON body of `POST /admin/latency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyBody {
    service: Service,
    ms: u64,
}

async fn set_latency(
    State(shared): State<Arc<Shared>>,
    body: Result<axum::Json<LatencyBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(b)) => {
            shared.set_latency(b.service, Duration::from_millis(b.ms));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(e.body_text()),
    }
}

async fn invalidate_tokens(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.tokens).invalidate_all();
    StatusCode::NO_CONTENT
}

/// JSON body of `POST /admin/certificates/{name}` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CertBody {
    /// `pkcs12` (default) or `pem`, or the MIME types.
    content_type: Option<String>,
    /// `rsa2048` (default) or `ec-p256`.
    key: Option<String>,
    subject: Option<String>,
    sans: Option<Vec<String>>,
    /// humantime, e.g. `90d`; default 365 days.
    validity: Option<String>,
    pem_order_scrambled: bool,
    exportable: Option<bool>,
}

fn cert_options(b: CertBody) -> Result<CertOptions, String> {
    let content_type = match b.content_type.as_deref() {
        None | Some("pkcs12") | Some("pfx") | Some("application/x-pkcs12") => {
            CertContentType::Pkcs12
        }
        Some("pem") | Some("application/x-pem-file") => CertContentType::Pem,
        Some(other) => return Err(format!("content_type {other:?}: use pkcs12 or pem")),
    };
    let key = match b.key.as_deref() {
        None | Some("rsa2048") | Some("rsa") => CertKey::Rsa2048,
        Some("ec-p256") | Some("ec") => CertKey::EcP256,
        Some(other) => return Err(format!("key {other:?}: use rsa2048 or ec-p256")),
    };
    let validity = match b.validity.as_deref() {
        None => DEFAULT_VALIDITY,
        Some(v) => humantime::parse_duration(v).map_err(|e| format!("validity {v:?}: {e}"))?,
    };
    Ok(CertOptions {
        content_type,
        key,
        subject_cn: b.subject,
        sans: b.sans,
        validity,
        pem_order_scrambled: b.pem_order_scrambled,
        exportable: b.exportable.unwrap_or(true),
    })
}

/// Issues (or rotates) a certificate; answers its public facts (no key).
async fn issue_certificate(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Option<axum::Json<CertBody>>,
) -> Response {
    if name.is_empty()
        || name.len() > 127
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return bad_request("certificate names are 1-127 characters of 0-9, a-z, A-Z and '-'");
    }
    let opts = match cert_options(body.map(|b| b.0).unwrap_or_default()) {
        Ok(o) => o,
        Err(e) => return bad_request(e),
    };
    // RSA key generation runs the openssl binary: keep it off the runtime.
    let issued =
        tokio::task::spawn_blocking(move || crate::certificates::issue(&shared, &name, &opts))
            .await;
    match issued {
        Ok(Ok(cert)) => axum::Json(cert).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": format!("{e:#}") })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn set_cert_exportable(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: String,
) -> Response {
    let exportable = match body.trim() {
        "true" => true,
        "false" => false,
        _ => return bad_request("body must be true or false"),
    };
    if crate::certificates::set_exportable(&shared, &name, exportable) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// The issuing root CA of certificate objects, PEM.
async fn cert_root(State(shared): State<Arc<Shared>>) -> String {
    shared.issuing_ca.root_pem()
}
