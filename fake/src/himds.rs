//! Fake Azure Arc HIMDS (PROTOCOL.md §1) on plain HTTP: the two-GET token
//! flow with a `.key` challenge file, and instance metadata.
//!
//! Invariants: every challenge creates a NEW random `<guid>.key` file (mode
//! 0600) in the token directory; a key is accepted once, then its file is
//! deleted; a wrong key gets a 401 without a new challenge. With
//! `set_challenge_path(Some(p))` the challenge names `p`, creates nothing
//! and every key is rejected (a hostile-listener scenario). With a realm
//! directory set (`Options::realm_dir`, `--realm-dir`), the key file is
//! still created in the token directory but the challenge names it by that
//! (Windows) directory: a Windows kvsync under Wine reads it through the
//! prefix's `drive_c`.
//!
//! Extension point: an IMDS flavour (PROTOCOL.md §2: same URL, no challenge,
//! optional `client_id`/`object_id`/`msi_res_id`) would be another handler
//! for the same path that skips [`challenge_or_key`] and calls
//! [`issue_token`]; an Entra endpoint (§3) would live in its own module and
//! also call [`crate::tokens::TokenIssuer::issue`].

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::RngCore as _;
use serde_json::json;

use crate::faults::{Service, guard, metadata_error};
use crate::state::{Shared, lock};

/// The token path of HIMDS and IMDS.
pub const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// Size of a key file's random contents, bytes (rendered as hex). Real key
/// files are short random strings; clients cap them at 4096 bytes.
const KEY_BYTES: usize = 32;

/// How long a challenge key stays valid. Real key files are single-use and
/// short-lived ("send the second request at once", PROTOCOL.md §1); expired
/// keys are rejected and their files deleted when the next challenge is made.
pub const KEY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Routes of the metadata port, with counting/latency/fault guard.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(TOKEN_PATH, get(arc_token))
        .route("/metadata/instance", get(instance))
        .route("/metadata/instance/compute", get(instance_compute))
        .layer(axum::middleware::from_fn_with_state(
            (shared.clone(), Service::Himds),
            guard,
        ))
        .with_state(shared)
}

/// `Metadata: true` and the required query parameters, as HIMDS checks them.
fn check_request(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    required: &[&str],
) -> Result<(), Response> {
    let metadata_ok = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata_ok {
        return Err(metadata_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        ));
    }
    for name in required {
        if query.get(*name).is_none_or(|v| v.is_empty()) {
            return Err(metadata_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("Required query variable '{name}' is missing"),
            ));
        }
    }
    Ok(())
}

async fn arc_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(resp) = check_request(&headers, &query, &["api-version", "resource"]) {
        return resp;
    }
    if let Err(resp) = challenge_or_key(&shared, &headers) {
        return resp;
    }
    let resource = query
        .get("resource")
        .map(String::as_str)
        .unwrap_or_default();
    let echo = lock(&shared.settings).echo_selector;
    let selector = SELECTORS
        .iter()
        .find_map(|k| query.get(*k).map(|v| (*k, v.clone())));
    match selector.filter(|_| echo) {
        None => issue_token(&shared, resource),
        Some((key, value)) => {
            let mut body = issue_token_json(&shared, resource);
            if let Some(obj) = body.as_object_mut() {
                obj.insert(key.to_owned(), json!(value));
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
    }
}

/// User-assigned identity selectors (PROTOCOL.md §1, §2).
const SELECTORS: &[&str] = &["client_id", "object_id", "msi_res_id"];

/// Issues a token and renders the metadata-service token JSON.
pub fn issue_token(shared: &Shared, resource: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(issue_token_json(shared, resource)),
    )
        .into_response()
}

/// Issues a token (counted) and returns the metadata-service token JSON.
pub fn issue_token_json(shared: &Shared, resource: &str) -> serde_json::Value {
    let token = lock(&shared.tokens).issue(resource);
    shared.bump(|c| c.tokens_issued += 1);
    shared.token_answer(token.metadata_json())
}

/// The Arc challenge: no `Authorization` → 401 naming a new key file;
/// `Basic <key>` → Ok if the key is outstanding (and consumes it); else 401.
fn challenge_or_key(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return Err(challenge(shared));
    };
    shared.bump(|c| c.himds_authorized += 1);
    let fixed_path = lock(&shared.settings).challenge_path.clone();
    let key = auth
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, key)| key.to_owned());
    let consumed = match (key, fixed_path) {
        (Some(key), None) => lock(&shared.challenges).remove(&key),
        _ => None,
    };
    if let Some((path, _)) = &consumed {
        remove_key_file(path);
    }
    match consumed {
        Some((_, created)) if created.elapsed() < KEY_TTL => Ok(()),
        _ => Err(metadata_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "The key in the Authorization header is not valid (unknown, already used or wrong)",
        )),
    }
}

fn challenge(shared: &Shared) -> Response {
    let (fixed_path, realm_dir) = {
        let s = lock(&shared.settings);
        (s.challenge_path.clone(), s.realm_dir.clone())
    };
    let path = match fixed_path {
        Some(p) => p,
        None => match new_key_file(shared) {
            Ok(p) => match (&realm_dir, p.file_name()) {
                (Some(dir), Some(name)) => PathBuf::from(format!(
                    "{}\\{}",
                    dir.trim_end_matches('\\'),
                    name.to_string_lossy()
                )),
                _ => p,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot create key file");
                return metadata_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "cannot create key file",
                );
            }
        },
    };
    shared.bump(|c| c.himds_challenges += 1);
    let mut resp = metadata_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized_client",
        "Use the key in the file named by the WWW-Authenticate realm as Basic authorization",
    );
    // The realm is NOT quoted (PROTOCOL.md §1).
    match HeaderValue::from_str(&format!("Basic realm={}", path.display())) {
        Ok(v) => {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Err(e) => tracing::error!(error = %e, "challenge path is not a valid header value"),
    }
    resp
}

/// Creates `<guid>.key` with random contents, mode 0600, and remembers it.
fn new_key_file(shared: &Shared) -> std::io::Result<PathBuf> {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let contents: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = shared.token_dir.join(format!("{}.key", random_guid()));
    write_new_private(&path, contents.as_bytes())?;
    let expired: Vec<PathBuf> = {
        let mut challenges = lock(&shared.challenges);
        let mut expired = Vec::new();
        challenges.retain(|_, (p, created)| {
            let keep = created.elapsed() < KEY_TTL;
            if !keep {
                expired.push(p.clone());
            }
            keep
        });
        challenges.insert(contents, (path.clone(), Instant::now()));
        expired
    };
    expired.iter().for_each(|p| remove_key_file(p));
    Ok(path)
}

fn remove_key_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete key file");
    }
}

/// Writes a new file (never replacing one) readable only by its owner.
pub fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A random GUID-shaped string (8-4-4-4-12 lowercase hex).
pub fn random_guid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn instance(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(resp) = check_request(&headers, &query, &["api-version"]) {
        return resp;
    }
    let compute = lock(&shared.settings).compute.clone();
    let body = json!({ "compute": compute, "network": { "interface": [] } });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn instance_compute(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(resp) = check_request(&headers, &query, &["api-version"]) {
        return resp;
    }
    let compute = lock(&shared.settings).compute.clone();
    (StatusCode::OK, axum::Json(compute)).into_response()
}
