//! Fake Entra ID token endpoint for Kubernetes workload identity
//! (PROTOCOL.md §3) on its own HTTPS port: `POST /{tenant}/oauth2/v2.0/token`
//! with the client-credentials grant and a JWT-bearer client assertion.
//!
//! Invariants: the tenant, `client_id`, grant type, assertion type and a
//! `.default` scope are checked; the assertion must equal the one configured
//! with [`crate::Emulator::set_workload_app`] (so tests can rotate the token
//! file and change the expectation); errors look like Entra's (`error`,
//! `error_description` starting with an AADSTS code, `error_codes`). Token
//! answers carry integer lifetimes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::faults::{Service, guard};
use crate::state::{Shared, lock};
use crate::tokens::Identity;

/// `client_assertion_type` of a JWT bearer assertion (PROTOCOL.md §3).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The workload-identity application Entra knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadApp {
    pub tenant_id: String,
    pub client_id: String,
    /// The service principal's object id (the `oid` of issued tokens).
    pub object_id: String,
    /// The only client assertion accepted; `None` rejects every one.
    pub expected_assertion: Option<String>,
}

impl Default for WorkloadApp {
    fn default() -> Self {
        Self {
            tenant_id: Identity::default().tenant_id,
            client_id: "77777777-8888-9999-aaaa-bbbbbbbbbbbb".to_owned(),
            object_id: "99999999-8888-7777-6666-555555555555".to_owned(),
            expected_assertion: None,
        }
    }
}

/// Routes of the login port.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .layer(axum::middleware::from_fn_with_state(
            (shared.clone(), Service::Login),
            guard,
        ))
        .with_state(shared)
}

/// An Entra-shaped error.
fn entra_error(status: StatusCode, error: &str, aadsts: u64, text: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{aadsts}: {text} Trace ID: 00000000-0000-0000-0000-000000000000"),
        "error_codes": [aadsts],
        "timestamp": "2026-01-01 00:00:00Z",
    });
    (status, axum::Json(body)).into_response()
}

fn check(app: &WorkloadApp, tenant: &str, form: &HashMap<String, String>) -> Result<(), Response> {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let bad = StatusCode::BAD_REQUEST;
    if !tenant.eq_ignore_ascii_case(&app.tenant_id) {
        return Err(entra_error(
            bad,
            "invalid_request",
            90002,
            "Tenant not found.",
        ));
    }
    if field("grant_type") != "client_credentials" {
        return Err(entra_error(
            bad,
            "unsupported_grant_type",
            70003,
            "Unsupported grant type.",
        ));
    }
    if field("client_assertion_type") != ASSERTION_TYPE {
        return Err(entra_error(
            bad,
            "invalid_request",
            900_023,
            "Invalid client assertion type.",
        ));
    }
    if !field("scope").ends_with("/.default") {
        return Err(entra_error(
            bad,
            "invalid_scope",
            1_002_012,
            "The scope must end in /.default.",
        ));
    }
    if !field("client_id").eq_ignore_ascii_case(&app.client_id) {
        return Err(entra_error(
            bad,
            "unauthorized_client",
            700_016,
            "Application was not found in the directory.",
        ));
    }
    let assertion = field("client_assertion");
    if app.expected_assertion.as_deref() != Some(assertion) || assertion.is_empty() {
        return Err(entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            70021,
            "No matching federated identity record found for presented assertion.",
        ));
    }
    Ok(())
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let app = lock(&shared.settings).workload.clone();
    if let Err(resp) = check(&app, &tenant, &form) {
        return resp;
    }
    let scope = form.get("scope").map(String::as_str).unwrap_or_default();
    let identity = Identity {
        object_id: app.object_id.clone(),
        tenant_id: app.tenant_id.clone(),
        app_id: app.client_id.clone(),
    };
    let issued = lock(&shared.tokens).issue_as(scope, &identity);
    shared.bump(|c| c.tokens_issued += 1);
    (
        StatusCode::OK,
        axum::Json(shared.token_answer(issued.entra_json())),
    )
        .into_response()
}
