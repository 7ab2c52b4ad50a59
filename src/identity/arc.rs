//! Azure Arc HIMDS token source (PROTOCOL.md §1): the two-GET challenge
//! flow. The challenge file is validated by [`super::challenge`] before it is
//! opened; exactly one retry carries its contents, a second 401 is an error.
//! Transient failures (404, 410, 429, 5xx, connection errors) are retried on
//! an injectable [`RetryPolicy`]. Neither the token nor the key file's
//! contents ever reach an error or a log line: debug lines name the endpoint
//! and the status only.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::challenge::{self, ChallengeError};
use super::{AccessToken, IdentityError, SourceInfo, TokenSource};
use crate::config::AuthConfig;
use crate::env::Env;
use crate::http::{RetryPolicy, RetryState};

/// HIMDS api-version (PROTOCOL.md §1: "Use 2020-06-01").
pub const API_VERSION: &str = "2020-06-01";
/// Default HIMDS token endpoint when the agent is installed but the env
/// vars are missing (PROTOCOL.md §1).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";
/// Largest token answer we read; real ones are ~2 KiB.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

pub struct ArcSource {
    pub endpoint: Url,
    pub token_dir: PathBuf,
    /// HIMDS base for instance metadata: `IMDS_ENDPOINT`, else the token
    /// endpoint's origin.
    pub instance_base: Url,
    http: reqwest::Client,
    retry: RetryPolicy,
}

impl ArcSource {
    pub fn new(endpoint: Url, token_dir: PathBuf, http: reqwest::Client) -> Self {
        let mut instance_base = endpoint.clone();
        instance_base.set_path("/");
        instance_base.set_query(None);
        Self {
            endpoint,
            token_dir,
            instance_base,
            http,
            retry: RetryPolicy::himds(),
        }
    }

    /// Replace the retry schedule (tests shorten it).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Endpoint from config, else `IDENTITY_ENDPOINT`, else the default when
    /// the agent is installed.
    pub fn from_config(
        auth: &AuthConfig,
        env: &Env,
        http: reqwest::Client,
    ) -> Result<Self, IdentityError> {
        let endpoint = resolve_endpoint(auth, env)?;
        let token_dir = match &auth.test_arc_token_dir {
            Some(dir) => dir.clone(),
            None => default_token_dir(env)?,
        };
        let mut source = Self::new(endpoint, token_dir, http);
        // `IMDS_ENDPOINT` names the HIMDS base unless the config chose the
        // token endpoint (then its origin is the base).
        if auth.identity_endpoint.is_none()
            && let Some(base) = env.var("IMDS_ENDPOINT").and_then(|v| Url::parse(v).ok())
        {
            source.instance_base = base;
        }
        Ok(source)
    }

    fn token_url(&self, audience: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION)
            .append_pair("resource", audience);
        url
    }

    fn endpoint_str(&self) -> String {
        self.endpoint.to_string()
    }

    /// One attempt of the challenge flow: GET, answer the 401 once, GET.
    async fn attempt(&self, url: &Url) -> Result<AccessToken, IdentityError> {
        let first = self.send(url, None).await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return self.finish(first).await;
        }
        let key = self.answer_challenge(&first)?;
        drop(first);
        let second = self.send(url, Some(&key)).await?;
        if second.status() == StatusCode::UNAUTHORIZED {
            return Err(IdentityError::Status {
                endpoint: self.endpoint_str(),
                status: 401,
                code: String::new(),
                detail: "the Arc agent rejected the challenge key; not retrying".to_owned(),
            });
        }
        self.finish(second).await
    }

    async fn send(
        &self,
        url: &Url,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Response, IdentityError> {
        let mut req = self.http.get(url.clone()).header("Metadata", "true");
        if let Some(key) = key {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Basic {}", key.expose_secret()))
                    .map_err(|_| IdentityError::Malformed {
                    endpoint: self.endpoint_str(),
                    detail: "the challenge key file holds bytes not allowed in an HTTP header"
                        .to_owned(),
                })?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        tracing::debug!(endpoint = %self.endpoint, status = resp.status().as_u16(), "HIMDS answered");
        Ok(resp)
    }

    fn transport_error(&self, e: &reqwest::Error) -> IdentityError {
        let detail = crate::http::transport_detail(e);
        if crate::http::is_connection_refused(e) {
            IdentityError::ArcNotRunning {
                endpoint: self.endpoint_str(),
                detail,
            }
        } else {
            IdentityError::Unreachable {
                endpoint: self.endpoint_str(),
                detail,
            }
        }
    }

    /// Parse the 401's `WWW-Authenticate`, validate and read the key file.
    fn answer_challenge(&self, resp: &reqwest::Response) -> Result<SecretString, IdentityError> {
        let malformed = |detail: &str| IdentityError::Malformed {
            endpoint: self.endpoint_str(),
            detail: detail.to_owned(),
        };
        // HeaderMap lookups are case-insensitive: `Www-Authenticate` matches.
        let header = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .ok_or_else(|| malformed("HTTP 401 without a WWW-Authenticate challenge"))?;
        let header = header
            .to_str()
            .map_err(|_| malformed("the WWW-Authenticate header is not text"))?;
        let path = challenge::parse_realm(header)
            .ok_or_else(|| malformed("the WWW-Authenticate header is not `Basic realm=<path>`"))?;
        challenge::read_key(&path, &self.token_dir)
            .map_err(|e| map_challenge_error(&path, &self.endpoint_str(), e))
    }

    /// A non-401 answer: 200 is a token, anything else an error.
    async fn finish(&self, resp: reqwest::Response) -> Result<AccessToken, IdentityError> {
        let status = resp.status();
        let endpoint = self.endpoint_str();
        let body = super::read_answer(
            resp,
            MAX_TOKEN_RESPONSE_BYTES,
            &endpoint,
            "the answer",
            |e| self.transport_error(e),
        )
        .await?;
        if status != StatusCode::OK {
            return Err(status_error(&endpoint, status, &body));
        }
        super::parse_token(&endpoint, &body)
    }
}

/// Map a challenge-file failure to the operator-facing error.
pub fn map_challenge_error(path: &Path, endpoint: &str, e: ChallengeError) -> IdentityError {
    let path = path.display().to_string();
    match e {
        ChallengeError::Refused(reason) => IdentityError::ChallengeRefused {
            path,
            reason,
            endpoint: endpoint.to_owned(),
        },
        ChallengeError::Permission => IdentityError::ChallengePermission { path },
        ChallengeError::Io(kind) => IdentityError::Other(format!(
            "cannot read the Azure Arc challenge file {path}: {kind}"
        )),
    }
}

/// A non-200 HIMDS/IMDS answer. Only the `error` code (a short token such as
/// `invalid_request`) is quoted; the description is summarised by status.
pub(super) fn status_error(endpoint: &str, status: StatusCode, body: &[u8]) -> IdentityError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| super::error_code(&v))
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let detail = match status.as_u16() {
        400 => "bad request: the identity may not be assigned to this machine",
        404 | 410 | 429 => "the identity service is not ready or is busy (retried)",
        s if s >= 500 => "the identity service failed (retried)",
        _ => "unexpected answer",
    };
    IdentityError::Status {
        endpoint: endpoint.to_owned(),
        status: status.as_u16(),
        code,
        detail: detail.to_owned(),
    }
}

fn resolve_endpoint(auth: &AuthConfig, env: &Env) -> Result<Url, IdentityError> {
    if let Some(url) = &auth.identity_endpoint {
        return Ok(url.clone());
    }
    if let Some(raw) = env.var("IDENTITY_ENDPOINT") {
        return Url::parse(raw).map_err(|e| {
            IdentityError::Config(format!("IDENTITY_ENDPOINT is not a valid URL ({e})"))
        });
    }
    if env.arc_agent_installed() {
        return Url::parse(DEFAULT_ENDPOINT)
            .map_err(|e| IdentityError::Config(format!("default HIMDS endpoint: {e}")));
    }
    Err(IdentityError::Config(format!(
        "Azure Arc: no HIMDS endpoint: set [auth] identity_endpoint or IDENTITY_ENDPOINT, or install the Arc agent ({} not found)",
        env.arc_agent_binary.display()
    )))
}

fn default_token_dir(env: &Env) -> Result<PathBuf, IdentityError> {
    crate::platform::arc_token_dir(env).map_err(IdentityError::Config)
}

/// Status codes worth retrying (PROTOCOL.md §1: 404, 410, 429, 5xx and
/// connection errors). The 401 challenge is part of an attempt, not a retry.
fn retryable(e: &IdentityError) -> bool {
    match e {
        IdentityError::ArcNotRunning { .. } | IdentityError::Unreachable { .. } => true,
        IdentityError::Status { status, .. } => matches!(*status, 404 | 410 | 429 | 500..=599),
        _ => false,
    }
}

#[async_trait::async_trait]
impl TokenSource for ArcSource {
    async fn fetch(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        let url = self.token_url(audience);
        let mut retry = RetryState::new(&self.retry);
        // Bounded: RetryState refuses after max_attempts.
        super::with_retries(
            "HIMDS",
            &self.endpoint,
            || self.attempt(&url),
            |e| retryable(e).then(|| retry.next_wait(None)).flatten(),
        )
        .await
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "arc",
            endpoint: self.endpoint.to_string(),
        }
    }

    async fn instance_metadata(&self) -> Result<Option<serde_json::Value>, IdentityError> {
        let url = super::instance::url(&self.instance_base, super::instance::HIMDS_API_VERSION);
        super::instance::fetch(&self.http, &url).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::AuthMethod;

    fn auth() -> AuthConfig {
        AuthConfig::with_method(AuthMethod::Arc)
    }

    #[test]
    fn endpoint_precedence() {
        let http = crate::http::metadata_client().unwrap();
        let mut a = auth();
        let env = Env::empty().with("IDENTITY_ENDPOINT", "http://127.0.0.1:1/env");
        let s = ArcSource::from_config(&a, &env, http.clone()).unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:1/env");
        #[cfg(unix)]
        assert_eq!(s.token_dir, PathBuf::from(crate::platform::ARC_TOKEN_DIR));
        a.identity_endpoint = Some(Url::parse("http://127.0.0.1:2/cfg").unwrap());
        a.test_arc_token_dir = Some(PathBuf::from("/tmp/x"));
        let s = ArcSource::from_config(&a, &env, http.clone()).unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:2/cfg");
        assert_eq!(s.token_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn default_endpoint_only_when_agent_installed() {
        let http = crate::http::metadata_client().unwrap();
        let err = ArcSource::from_config(&auth(), &Env::empty(), http.clone())
            .err()
            .unwrap();
        assert!(matches!(err, IdentityError::Config(_)), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("himds");
        std::fs::create_dir(&bin).unwrap();
        let mut env = Env::empty();
        env.arc_agent_binary = bin;
        let s = ArcSource::from_config(&auth(), &env, http).unwrap();
        assert_eq!(s.endpoint.as_str(), DEFAULT_ENDPOINT);
    }

    #[test]
    fn token_url_carries_api_version_and_resource() {
        let s = ArcSource::new(
            Url::parse("http://127.0.0.1:9/metadata/identity/oauth2/token").unwrap(),
            PathBuf::from("/x"),
            crate::http::metadata_client().unwrap(),
        );
        assert_eq!(
            s.token_url("https://vault.azure.net").as_str(),
            "http://127.0.0.1:9/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https%3A%2F%2Fvault.azure.net"
        );
    }

    #[test]
    fn permission_denied_message() {
        let e = map_challenge_error(
            Path::new("/var/opt/azcmagent/tokens/a.key"),
            "http://localhost:40342/",
            ChallengeError::Permission,
        );
        let msg = e.to_string();
        assert!(matches!(e, IdentityError::ChallengePermission { .. }));
        assert!(msg.contains("/var/opt/azcmagent/tokens/a.key"), "{msg}");
        assert!(msg.contains("root") && msg.contains("himds"), "{msg}");
    }

    #[test]
    fn status_errors_quote_codes_only() {
        let e = status_error(
            "http://h/",
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_request","error_description":"CANARY"}"#,
        );
        let msg = e.to_string();
        assert!(msg.contains("HTTP 400 (invalid_request)"), "{msg}");
        assert!(!msg.contains("CANARY"));
        let e = status_error("http://h/", StatusCode::BAD_GATEWAY, br#"{"error":"x y"}"#);
        assert!(!e.to_string().contains("x y"));
        assert!(retryable(&e));
        assert!(!retryable(&status_error("h", StatusCode::BAD_REQUEST, b"")));
    }
}
