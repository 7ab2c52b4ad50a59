//! Identity: obtain OAuth access tokens for Key Vault from the host's managed
//! identity. Sources: Azure Arc HIMDS ([`arc`]), Azure VM IMDS ([`imds`])
//! and Kubernetes workload identity ([`workload`]), chosen by [`select`]
//! (`method = "auto"` tries them in the SPEC.md order, see [`auto`]). Tokens
//! are held in memory only ([`cache::TokenCache`]), reused until shortly
//! before expiry, and never logged: [`AccessToken`] prints as `[REDACTED]`.
//! The metadata endpoints (HIMDS, IMDS) are always reached directly, never
//! through a proxy. Instance metadata ([`instance`]) comes from the same
//! endpoint as the token. The sources share the bounded answer reading,
//! token parsing, error-code quoting and retry loop defined here.

pub mod arc;
pub mod arc_peer;
pub mod auto;
pub mod cache;
pub mod challenge;
pub mod claims;
pub mod imds;
pub mod instance;
pub mod token;
pub mod workload;

use std::sync::Arc;
use std::time::SystemTime;

use secrecy::SecretString;

use crate::config::{AuthConfig, AuthMethod};
use crate::env::Env;

/// A bearer token and when it expires.
#[derive(Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_on: SystemTime,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// What `whoami` and error messages say about a source.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// "arc", "imds", "workload-identity".
    pub kind: &'static str,
    /// The token endpoint (no secrets in it).
    pub endpoint: String,
}

#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// Request a fresh token for `audience` (e.g. `https://vault.azure.net`,
    /// without `/.default`). Not cached: see [`cache::TokenCache`].
    async fn fetch(&self, audience: &str) -> Result<AccessToken, IdentityError>;
    fn info(&self) -> SourceInfo;
    /// The host's instance metadata `compute` object (tags normalised, see
    /// [`instance::normalize`]), from the same metadata service as the
    /// token; `Ok(None)` when this source has none (workload identity).
    async fn instance_metadata(&self) -> Result<Option<serde_json::Value>, IdentityError> {
        Ok(None)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The Arc challenge named a file kvsync refuses to read.
    #[error(
        "refusing the Azure Arc challenge file {path}: {reason}; a local process may be impersonating the Arc agent (HIMDS) on {endpoint}"
    )]
    ChallengeRefused {
        path: String,
        reason: String,
        endpoint: String,
    },
    #[error(
        "permission denied reading the Azure Arc challenge file {path}: {hint}", hint = crate::platform::ARC_PERMISSION_HINT
    )]
    ChallengePermission { path: String },
    #[error(
        "cannot connect to the Azure Arc agent at {endpoint}: the Arc agent (himds service) is not running ({detail})"
    )]
    ArcNotRunning { endpoint: String, detail: String },
    #[error("identity endpoint {endpoint} is unreachable: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("identity endpoint {endpoint} answered HTTP {status}{code}: {detail}")]
    Status {
        endpoint: String,
        status: u16,
        /// ` (error code)` or empty.
        code: String,
        detail: String,
    },
    #[error("identity endpoint {endpoint} sent a malformed answer: {detail}")]
    Malformed { endpoint: String, detail: String },
    #[error("identity configuration: {0}")]
    Config(String),
    #[error("no managed identity is usable:\n{0}")]
    NoneUsable(String),
    #[error("{0}")]
    Other(String),
}

impl IdentityError {
    /// Worth retrying later (outage) rather than failing for good.
    pub fn is_transient(&self) -> bool {
        match self {
            IdentityError::ArcNotRunning { .. } | IdentityError::Unreachable { .. } => true,
            IdentityError::Status { status, .. } => {
                matches!(*status, 404 | 410 | 429) || *status >= 500
            }
            IdentityError::Malformed { .. } => true,
            _ => false,
        }
    }
}

impl IdentityError {
    /// `endpoint` could not be reached (`e` described without its URL).
    fn unreachable(endpoint: &str, e: &reqwest::Error) -> Self {
        IdentityError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail: crate::http::transport_detail(e),
        }
    }
}

/// Read an identity endpoint's answer, at most `limit` bytes: a larger one
/// is `Malformed` ("{what} is too large"), a transport failure is mapped by
/// `transport`.
async fn read_answer(
    resp: reqwest::Response,
    limit: usize,
    endpoint: &str,
    what: &str,
    transport: impl FnOnce(&reqwest::Error) -> IdentityError,
) -> Result<Vec<u8>, IdentityError> {
    crate::http::read_body_limited(resp, limit)
        .await
        .map_err(|e| match e {
            crate::http::BodyError::TooLarge(_) => IdentityError::Malformed {
                endpoint: endpoint.to_owned(),
                detail: format!("{what} is too large"),
            },
            crate::http::BodyError::Transport(e) => transport(&e),
        })
}

/// GET `url` with `Metadata: true` (IMDS, HIMDS instance metadata) and
/// read the answer, at most `limit` bytes (see [`read_answer`]). Any status
/// comes back for the caller to judge.
async fn metadata_get(
    http: &reqwest::Client,
    url: &url::Url,
    endpoint: &str,
    limit: usize,
    what: &str,
) -> Result<(reqwest::StatusCode, Vec<u8>), IdentityError> {
    let resp = http
        .get(url.clone())
        .header("Metadata", "true")
        .send()
        .await
        .map_err(|e| IdentityError::unreachable(endpoint, &e))?;
    let status = resp.status();
    let body = read_answer(resp, limit, endpoint, what, |e| {
        IdentityError::unreachable(endpoint, e)
    })
    .await?;
    Ok((status, body))
}

/// A 200 token answer from `endpoint`, parsed now (errors name fields only).
fn parse_token(endpoint: &str, body: &[u8]) -> Result<AccessToken, IdentityError> {
    token::parse(body, SystemTime::now()).map_err(|e| IdentityError::Malformed {
        endpoint: endpoint.to_owned(),
        detail: e.to_string(),
    })
}

/// Run `attempt` until it succeeds or `next_wait` (asked about each
/// failure) returns `None`, sleeping the wait it returns in between. The
/// caller's [`crate::http::RetryState`]s inside `next_wait` bound the loop.
async fn with_retries<F, Fut>(
    service: &'static str,
    endpoint: &url::Url,
    mut attempt: F,
    mut next_wait: impl FnMut(&IdentityError) -> Option<std::time::Duration>,
) -> Result<AccessToken, IdentityError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<AccessToken, IdentityError>>,
{
    let mut retry = 0u32;
    loop {
        let err = match attempt().await {
            Ok(token) => return Ok(token),
            Err(e) => e,
        };
        let Some(wait) = next_wait(&err) else {
            return Err(err);
        };
        retry += 1;
        tracing::debug!(service, endpoint = %endpoint, retry, ?wait, "retrying the token request");
        tokio::time::sleep(wait).await;
    }
}

/// The OAuth `error` code of an answer (`invalid_request`), when it is a
/// plain identifier; the description is never quoted (it can echo input).
fn error_code(answer: &serde_json::Value) -> Option<String> {
    answer
        .get("error")?
        .as_str()
        .filter(|c| crate::http::is_plain_code(c))
        .map(str::to_owned)
}

/// Choose the token source for `auth` on this host. Explicit methods use
/// only that source. `auto` picks Arc at once when it is detectable (env
/// vars, config or the agent installed); otherwise the choice needs a
/// network probe of IMDS and is made on the first token request by
/// [`auto::AutoSource`] (see [`auto::resolve`]).
pub fn select(
    auth: &AuthConfig,
    env: &Env,
    metadata_http: reqwest::Client,
    remote_http: reqwest::Client,
) -> Result<Arc<dyn TokenSource>, IdentityError> {
    match auth.method {
        AuthMethod::Arc => Ok(Arc::new(auto::arc_source(auth, env, metadata_http)?)),
        AuthMethod::Imds => Ok(Arc::new(imds::ImdsSource::from_config(
            auth,
            metadata_http,
        )?)),
        AuthMethod::WorkloadIdentity => Ok(Arc::new(workload::WorkloadSource::from_config(
            auth,
            env,
            remote_http,
        )?)),
        AuthMethod::Auto => {
            if auto::arc_detected(auth, env).is_ok() {
                return Ok(Arc::new(auto::arc_source(auth, env, metadata_http)?));
            }
            let probe_http = crate::http::metadata_probe_client()
                .map_err(|e| IdentityError::Other(e.to_string()))?;
            Ok(Arc::new(auto::AutoSource::new(
                auth.clone(),
                env.clone(),
                auto::Clients {
                    metadata: metadata_http,
                    remote: remote_http,
                    probe: probe_http,
                },
            )))
        }
    }
}
