//! Azure VM IMDS token source (PROTOCOL.md §2): one GET with `Metadata:
//! true`, no challenge. System-assigned identity by default; a user-assigned
//! one by exactly one selector (`client_id`, `object_id` or `msi_res_id`).
//!
//! Invariants: always reached directly (the metadata client has no proxy);
//! 404, 429, 5xx and connection errors are retried on an injectable
//! [`RetryPolicy`], 410 ("IMDS is updating", at boot) on its own schedule
//! covering the documented ~70 s window; other 4xx are final. Never logs or
//! returns the token or the body of an answer (only the `error` code).

use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use super::{AccessToken, IdentityError, SourceInfo, TokenSource};
use crate::config::AuthConfig;
use crate::http::{RetryPolicy, RetryState};

/// IMDS identity api-version (PROTOCOL.md §2).
pub const API_VERSION: &str = "2018-02-01";
/// The IMDS base URL on every Azure VM (PROTOCOL.md §2).
pub const DEFAULT_BASE: &str = "http://169.254.169.254";
/// Token path below the base (PROTOCOL.md §2).
pub const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// IMDS 410: "available within 70 s" (PROTOCOL.md §2).
pub const GONE_WINDOW: Duration = Duration::from_secs(70);
/// IMDS 410: "retry every ~10 s" (PROTOCOL.md §2).
pub const GONE_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Attempts while IMDS answers 410: the first plus one every ~10 s for 70 s.
pub const GONE_MAX_ATTEMPTS: u32 = 8;
/// Largest token answer we read; real ones are ~2 KiB.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// The 410 schedule: a retry every [`GONE_RETRY_INTERVAL`] (jittered down
/// by at most a quarter) for at most [`GONE_WINDOW`].
pub const fn gone_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: GONE_MAX_ATTEMPTS,
        base: GONE_RETRY_INTERVAL,
        cap: GONE_RETRY_INTERVAL,
        total: GONE_WINDOW,
        max_retry_after: GONE_RETRY_INTERVAL,
    }
}

/// The user-assigned identity selector, as `[auth]` configures it.
pub use crate::config::UserAssigned as Selector;

impl Selector {
    /// The selector configured in `[auth]` (config load allows at most
    /// one).
    pub fn from_auth(auth: &AuthConfig) -> Option<Self> {
        auth.user_assigned.clone()
    }

    /// The query parameter and its value.
    pub fn param(&self) -> (&'static str, &str) {
        match self {
            Selector::ClientId(v) => ("client_id", v),
            Selector::ObjectId(v) => ("object_id", v),
            Selector::ResourceId(v) => ("msi_res_id", v),
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (k, v) = self.param();
        write!(f, "{k}={v}")
    }
}

pub struct ImdsSource {
    pub base: Url,
    pub selector: Option<Selector>,
    http: reqwest::Client,
    retry: RetryPolicy,
    gone: RetryPolicy,
}

impl ImdsSource {
    pub fn new(base: Url, selector: Option<Selector>, http: reqwest::Client) -> Self {
        Self {
            base,
            selector,
            http,
            retry: RetryPolicy::himds(),
            gone: gone_policy(),
        }
    }

    /// `[auth] imds_endpoint` (else [`DEFAULT_BASE`]) and the configured
    /// selector.
    pub fn from_config(auth: &AuthConfig, http: reqwest::Client) -> Result<Self, IdentityError> {
        Ok(Self::new(base_url(auth)?, Selector::from_auth(auth), http))
    }

    /// Replace both retry schedules: `retry` for 404/429/5xx/connection
    /// errors, `gone` for 410 (tests shorten them).
    pub fn with_retry_policies(mut self, retry: RetryPolicy, gone: RetryPolicy) -> Self {
        self.retry = retry;
        self.gone = gone;
        self
    }

    /// `{base}/metadata/identity/oauth2/token`.
    pub fn endpoint(&self) -> Url {
        let mut url = self.base.clone();
        url.set_path(TOKEN_PATH);
        url.set_query(None);
        url
    }

    fn token_url(&self, audience: &str) -> Url {
        let mut url = self.endpoint();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", API_VERSION)
                .append_pair("resource", audience);
            if let Some(sel) = &self.selector {
                let (k, v) = sel.param();
                q.append_pair(k, v);
            }
        }
        url
    }

    async fn attempt(&self, url: &Url) -> Result<AccessToken, IdentityError> {
        let endpoint = self.endpoint().to_string();
        let (status, body) = super::metadata_get(
            &self.http,
            url,
            &endpoint,
            MAX_TOKEN_RESPONSE_BYTES,
            "the answer",
        )
        .await?;
        tracing::debug!(endpoint = %endpoint, status = status.as_u16(), "IMDS answered");
        if status != StatusCode::OK {
            return Err(self.status_error(&endpoint, status, &body));
        }
        super::parse_token(&endpoint, &body)
    }

    /// Like HIMDS errors, but a 400 names the selector (it is an id, not a
    /// secret): the usual cause is an identity not assigned to this VM.
    fn status_error(&self, endpoint: &str, status: StatusCode, body: &[u8]) -> IdentityError {
        let err = super::arc::status_error(endpoint, status, body);
        match (status, &self.selector, err) {
            (StatusCode::BAD_REQUEST, Some(sel), IdentityError::Status { code, .. }) => {
                IdentityError::Status {
                    endpoint: endpoint.to_owned(),
                    status: 400,
                    code,
                    detail: format!(
                        "the user-assigned identity {sel} is not assigned to this VM (or does not exist)"
                    ),
                }
            }
            (_, _, err) => err,
        }
    }
}

/// `[auth] imds_endpoint`, else [`DEFAULT_BASE`].
pub fn base_url(auth: &AuthConfig) -> Result<Url, IdentityError> {
    match &auth.imds_endpoint {
        Some(url) => Ok(url.clone()),
        None => Url::parse(DEFAULT_BASE)
            .map_err(|e| IdentityError::Config(format!("default IMDS endpoint: {e}"))),
    }
}

/// Whether IMDS answers at `base` (PROTOCOL.md §2: any HTTP answer means
/// "present", a connection error "absent"). Sends the token path WITHOUT
/// the `Metadata` header, which IMDS answers with 400 and no token. `http`
/// should be [`crate::http::metadata_probe_client`] (connect timeout ≤ 1 s).
pub async fn probe(base: &Url, http: &reqwest::Client) -> Result<(), String> {
    let mut url = base.clone();
    url.set_path(TOKEN_PATH);
    url.set_query(Some(&format!("api-version={API_VERSION}")));
    match http.get(url).send().await {
        Ok(resp) => {
            tracing::debug!(status = resp.status().as_u16(), "IMDS probe answered");
            Ok(())
        }
        Err(e) => Err(crate::http::transport_detail(&e)),
    }
}

#[async_trait::async_trait]
impl TokenSource for ImdsSource {
    async fn fetch(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        let url = self.token_url(audience);
        let mut retry = RetryState::new(&self.retry);
        let mut gone = RetryState::new(&self.gone);
        // Bounded: each RetryState refuses after its attempts or budget.
        super::with_retries(
            "IMDS",
            &self.base,
            || self.attempt(&url),
            |err| match err {
                IdentityError::Status { status: 410, .. } => gone.next_wait(None),
                IdentityError::Status { status, .. }
                    if matches!(*status, 404 | 429 | 500..=599) =>
                {
                    retry.next_wait(None)
                }
                IdentityError::Unreachable { .. } => retry.next_wait(None),
                _ => None,
            },
        )
        .await
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "imds",
            endpoint: self.endpoint().to_string(),
        }
    }

    async fn instance_metadata(&self) -> Result<Option<serde_json::Value>, IdentityError> {
        let url = super::instance::url(&self.base, super::instance::IMDS_API_VERSION);
        super::instance::fetch(&self.http, &url).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn src(sel: Option<Selector>) -> ImdsSource {
        ImdsSource::new(
            Url::parse("http://127.0.0.1:9").unwrap(),
            sel,
            crate::http::metadata_client().unwrap(),
        )
    }

    #[test]
    fn token_url_per_selector() {
        let base = "http://127.0.0.1:9/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";
        assert_eq!(
            src(None).token_url("https://vault.azure.net").as_str(),
            base
        );
        let u = src(Some(Selector::ClientId("c".into()))).token_url("https://vault.azure.net");
        assert_eq!(u.as_str(), format!("{base}&client_id=c"));
        let u = src(Some(Selector::ObjectId("o".into()))).token_url("https://vault.azure.net");
        assert_eq!(u.as_str(), format!("{base}&object_id=o"));
        let u = src(Some(Selector::ResourceId("/s/x".into()))).token_url("https://vault.azure.net");
        assert_eq!(u.as_str(), format!("{base}&msi_res_id=%2Fs%2Fx"));
    }

    #[test]
    fn gone_policy_fits_the_documented_window() {
        let p = gone_policy();
        let mut s = RetryState::new(&p);
        let mut total = Duration::ZERO;
        while let Some(w) = s.next_wait(None) {
            assert!(w <= GONE_RETRY_INTERVAL);
            total += w;
        }
        assert!(total <= GONE_WINDOW);
        assert!(s.retries() >= 6, "retries {}", s.retries());
    }

    #[test]
    fn unassigned_identity_names_the_selector() {
        let s = src(Some(Selector::ClientId("abc".into())));
        let e = s.status_error(
            "http://h/",
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_request","error_description":"CANARY"}"#,
        );
        let m = e.to_string();
        assert!(
            m.contains("client_id=abc") && m.contains("not assigned"),
            "{m}"
        );
        assert!(!m.contains("CANARY"));
    }
}
