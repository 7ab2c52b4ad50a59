//! Fake Azure VM IMDS (PROTOCOL.md §2) on its own plain-HTTP port: the
//! token endpoint (no challenge; `Metadata: true` required; at most one of
//! `client_id` / `object_id` / `msi_res_id`) and instance metadata.
//!
//! Invariants: a request without `Metadata: true` gets 400 (that is also
//! how clients probe for IMDS); a selector naming an identity not assigned
//! to the VM gets 400, as does a system-assigned request when the VM has
//! none; each user-assigned identity's tokens carry its own `oid` and
//! `appid` (= client id). 404/410/429/5xx come from injected faults
//! (`Service::Imds`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::faults::{Service, guard, metadata_error};
use crate::himds::TOKEN_PATH;
use crate::state::{Shared, lock};
use crate::tokens::Identity;

/// A user-assigned managed identity assigned to the fake VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAssigned {
    pub client_id: String,
    pub object_id: String,
    /// ARM resource id (`msi_res_id`).
    pub resource_id: String,
}

/// Routes of the IMDS port, with counting/latency/fault guard.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(TOKEN_PATH, get(imds_token))
        .route("/metadata/instance", get(instance))
        .layer(axum::middleware::from_fn_with_state(
            (shared.clone(), Service::Imds),
            guard,
        ))
        .with_state(shared)
}

fn bad_request(description: &str) -> Response {
    metadata_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn check_metadata(headers: &HeaderMap) -> Result<(), Response> {
    let ok = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if ok {
        Ok(())
    } else {
        Err(bad_request("Required metadata header not specified"))
    }
}

/// Which identity a token request names (`Err` = a 400 answer).
fn identity_for(shared: &Shared, query: &HashMap<String, String>) -> Result<Identity, Response> {
    let selectors: Vec<(&str, &String)> = ["client_id", "object_id", "msi_res_id"]
        .into_iter()
        .filter_map(|k| query.get(k).map(|v| (k, v)))
        .collect();
    let tenant = lock(&shared.tokens).identity.clone();
    let settings = lock(&shared.settings);
    match selectors.as_slice() {
        [] if settings.imds_system_assigned => Ok(tenant),
        [] => Err(bad_request(
            "Identity not found: the VM has no system-assigned identity",
        )),
        [(key, value)] => settings
            .user_assigned
            .iter()
            .find(|u| match *key {
                "client_id" => u.client_id.eq_ignore_ascii_case(value),
                "object_id" => u.object_id.eq_ignore_ascii_case(value),
                _ => u.resource_id.eq_ignore_ascii_case(value),
            })
            .map(|u| Identity {
                object_id: u.object_id.clone(),
                tenant_id: tenant.tenant_id.clone(),
                app_id: u.client_id.clone(),
            })
            .ok_or_else(|| bad_request("Identity not found")),
        _ => Err(bad_request(
            "Only one of client_id, object_id, msi_res_id may be specified",
        )),
    }
}

async fn imds_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(resp) = check_metadata(&headers) {
        return resp;
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return bad_request("Required query variable 'resource' is missing");
    };
    if query.get("api-version").is_none_or(|v| v.is_empty()) {
        return bad_request("Required query variable 'api-version' is missing");
    }
    let identity = match identity_for(&shared, &query) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let token = lock(&shared.tokens).issue_as(resource, &identity);
    shared.bump(|c| c.tokens_issued += 1);
    let mut body = token.metadata_json();
    // IMDS may echo client_id (PROTOCOL.md §2).
    if let Some(obj) = body.as_object_mut() {
        obj.insert("client_id".to_owned(), json!(identity.app_id));
    }
    (StatusCode::OK, axum::Json(shared.token_answer(body))).into_response()
}

async fn instance(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(resp) = check_metadata(&headers) {
        return resp;
    }
    if query.get("api-version").is_none_or(|v| v.is_empty()) {
        return bad_request("Required query variable 'api-version' is missing");
    }
    let compute = lock(&shared.settings).compute.clone();
    let body = json!({ "compute": compute, "network": { "interface": [] } });
    (StatusCode::OK, axum::Json(body)).into_response()
}
