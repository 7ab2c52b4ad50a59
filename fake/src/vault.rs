//! Fake Key Vault data plane (PROTOCOL.md §5) over HTTPS: get a secret
//! (latest or pinned version), list secrets and versions with paging, the
//! Bearer challenge, and Azure-shaped errors.
//!
//! Order of checks per request, as the service does: counting, latency and
//! faults (the guard), then `api-version` (400 `BadParameter`), then the
//! token (401 `Unauthorized` + `WWW-Authenticate: Bearer ...`), then the
//! operation. Never logs secret values or tokens.
//!
//! Certificates (`/certificates/{name}[/{version}]`, PROTOCOL.md §6) and
//! keys (`/keys/{name}[/{version}]`) are routes of their own modules merged
//! in [`router`], reusing [`authorize`] and [`crate::faults::kv_error`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::faults::{Service, guard, kv_error};
use crate::state::{Shared, lock};
use crate::store::{Secret, bundle_json, item_json};
use crate::tokens::TokenRejection;

/// Largest (and default) page size of list operations: Key Vault caps
/// `maxresults` at 25 (REST spec, `GetSecrets` `maxresults` maximum 25).
pub const MAX_RESULTS: usize = 25;

type Q = Query<HashMap<String, String>>;

/// Routes of the vault port, with counting/latency/fault guard.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/secrets", get(list_secrets))
        .route("/secrets/", get(list_secrets))
        .route("/secrets/{name}", get(get_secret_handler))
        .route("/secrets/{name}/", get(get_secret_handler))
        .route("/secrets/{name}/versions", get(list_versions))
        .route("/secrets/{name}/{version}", get(get_secret_handler))
        .route("/secrets/{name}/{version}/", get(get_secret_handler))
        .merge(crate::certificates::routes())
        .merge(crate::keys::routes())
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(
            (shared.clone(), Service::KeyVault),
            guard,
        ))
        .with_state(shared)
}

/// Checks `api-version` and the bearer token.
pub fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Response> {
    if query.get("api-version").is_none_or(|v| v.is_empty()) {
        return Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The 'api-version' query parameter is missing.",
            None,
        ));
    }
    check_api_version(shared, query)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let message = match token {
        None => "AKV10000: Request is missing a Bearer or PoP token.".to_owned(),
        Some(token) => match lock(&shared.tokens).check(token, &shared.vault_audience) {
            Ok(()) => return Ok(()),
            Err(TokenRejection::Unknown) => {
                "AKV10000: Invalid token: not issued by this identity provider.".to_owned()
            }
            Err(TokenRejection::Expired) => "AKV10000: Token is expired.".to_owned(),
            Err(TokenRejection::WrongAudience(aud)) => {
                format!(
                    "AKV10022: Invalid audience. Expected {}, found: {aud}.",
                    shared.vault_audience
                )
            }
        },
    };
    shared.bump(|c| c.kv_unauthorized += 1);
    Err(unauthorized(shared, &message))
}

/// With `set_vault_api_versions(Some(..))`, only those versions are accepted.
fn check_api_version(shared: &Shared, query: &HashMap<String, String>) -> Result<(), Response> {
    let allowed = lock(&shared.settings).vault_api_versions.clone();
    let given = query
        .get("api-version")
        .map(String::as_str)
        .unwrap_or_default();
    match allowed {
        Some(list) if !list.iter().any(|v| v == given) => Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            &format!(
                "The specified version ({given}) is not recognized. Consider using a supported version ({}).",
                list.join(", ")
            ),
            None,
        )),
        _ => Ok(()),
    }
}

/// Skiptoken of the empty first page (quirk mode): a name sorting before
/// every real one (names are `[0-9a-zA-Z-]`, never NUL).
const EMPTY_PAGE_CURSOR: &str = "\0";

/// In quirk mode, the first page of a list is empty but has a `nextLink`.
fn empty_first_page(
    shared: &Shared,
    path: &str,
    q: &HashMap<String, String>,
    max: usize,
    cursor: &str,
) -> Option<Response> {
    let quirk = lock(&shared.settings).empty_first_list_page;
    if !quirk || q.contains_key("$skiptoken") {
        return None;
    }
    let body = json!({ "value": [], "nextLink": next_link(shared, path, q, Some(cursor.to_owned()), max) });
    Some((StatusCode::OK, axum::Json(body)).into_response())
}

fn unauthorized(shared: &Shared, message: &str) -> Response {
    let tenant = lock(&shared.tokens).identity.tenant_id.clone();
    let mut resp = kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", message, None);
    let challenge = format!(
        "Bearer authorization=\"https://login.windows.net/{tenant}\", resource=\"{}\"",
        shared.vault_audience
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn not_found(name: &str, version: Option<&str>) -> Response {
    let what = match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_owned(),
    };
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!("A secret with (name/id) {what} was not found in this key vault."),
        None,
    )
}

fn secret_response(shared: &Shared, name: &str, version: Option<&str>) -> Response {
    let store = lock(&shared.store);
    let Some(secret) = store.get(name) else {
        return not_found(name, version);
    };
    let found = match version {
        Some(v) => secret.version(v),
        None => secret.current(),
    };
    let Some(v) = found else {
        return not_found(name, version);
    };
    if !v.opts.enabled {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
            Some("SecretDisabled"),
        );
    }
    (
        StatusCode::OK,
        axum::Json(bundle_json(&shared.vault_base, secret, v)),
    )
        .into_response()
}

/// `GET …/{name}[/{version}][/]`: latest when the version segment is absent.
async fn get_secret_handler(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, &q) {
        return resp;
    }
    shared.bump(|c| c.kv_gets += 1);
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    secret_response(&shared, name, params.get("version").map(String::as_str))
}

/// With `set_list_forbidden(true)`: 403 as for an identity that may GET
/// secrets but not list them (no `secrets/readMetadata` / List).
fn list_forbidden(shared: &Shared) -> Option<Response> {
    lock(&shared.settings).list_forbidden.then(|| {
        kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/readMetadata/action'",
            Some("ForbiddenByRbac"),
        )
    })
}

/// Parses `maxresults` (1..=25, default 25).
fn page_size(q: &HashMap<String, String>) -> Result<usize, Response> {
    match q.get("maxresults") {
        None => Ok(MAX_RESULTS),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_RESULTS).contains(&n) => Ok(n),
            _ => Err(kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!("Invalid maxresults value: it must be between 1 and {MAX_RESULTS}."),
                None,
            )),
        },
    }
}

fn bad_skiptoken() -> Response {
    kv_error(
        StatusCode::BAD_REQUEST,
        "BadParameter",
        "The $skiptoken is invalid.",
        None,
    )
}

fn decode_skiptoken(q: &HashMap<String, String>) -> Result<Option<String>, Response> {
    let Some(tok) = q.get("$skiptoken") else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD.decode(tok).map_err(|_| bad_skiptoken())?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| bad_skiptoken())
}

/// The absolute `nextLink` of a list page, or null on the last page.
fn next_link(
    shared: &Shared,
    path: &str,
    q: &HashMap<String, String>,
    cursor: Option<String>,
    max: usize,
) -> Value {
    let Some(cursor) = cursor else {
        return Value::Null;
    };
    let api = q
        .get("api-version")
        .filter(|v| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .map_or("7.2", String::as_str);
    let token = URL_SAFE_NO_PAD.encode(cursor);
    json!(format!(
        "{}{path}?api-version={api}&$skiptoken={token}&maxresults={max}",
        shared.vault_base
    ))
}

async fn list_secrets(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, &q) {
        return resp;
    }
    shared.bump(|c| c.kv_lists += 1);
    if let Some(resp) = list_forbidden(&shared) {
        return resp;
    }
    let (max, after) = match (page_size(&q), decode_skiptoken(&q)) {
        (Ok(m), Ok(a)) => (m, a),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let Some(resp) = empty_first_page(&shared, "/secrets", &q, max, EMPTY_PAGE_CURSOR) {
        return resp;
    }
    let store = lock(&shared.store);
    let (page, more) = store.page_after(after.as_deref(), max);
    let items: Vec<Value> = page
        .iter()
        .filter_map(|s: &&Secret| {
            let v = s.current()?;
            Some(Value::Object(item_json(
                format!("{}/secrets/{}", shared.vault_base, s.name),
                v,
            )))
        })
        .collect();
    let cursor = if more {
        page.last().map(|s| s.name.to_ascii_lowercase())
    } else {
        None
    };
    let body =
        json!({ "value": items, "nextLink": next_link(&shared, "/secrets", &q, cursor, max) });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn list_versions(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, &q) {
        return resp;
    }
    shared.bump(|c| c.kv_lists += 1);
    if let Some(resp) = list_forbidden(&shared) {
        return resp;
    }
    let (max, after) = match (page_size(&q), decode_skiptoken(&q)) {
        (Ok(m), Ok(a)) => (m, a),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let start = match after.map(|a| a.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad_skiptoken(),
    };
    let store = lock(&shared.store);
    let Some(secret) = store.get(&name) else {
        return not_found(&name, None);
    };
    let path = format!("/secrets/{}/versions", secret.name);
    if let Some(resp) = empty_first_page(&shared, &path, &q, max, "0") {
        return resp;
    }
    let items: Vec<Value> = secret
        .versions
        .iter()
        .skip(start)
        .take(max)
        .map(|v| {
            let id = format!(
                "{}/secrets/{}/{}",
                shared.vault_base, secret.name, v.version
            );
            Value::Object(item_json(id, v))
        })
        .collect();
    let end = start + items.len();
    let cursor = (end < secret.versions.len()).then(|| end.to_string());
    let body = json!({ "value": items, "nextLink": next_link(&shared, &path, &q, cursor, max) });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn unknown_path(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, &q) {
        return resp;
    }
    kv_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource was not found (kvsync-fake).",
        None,
    )
}
