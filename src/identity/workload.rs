//! Kubernetes workload identity (PROTOCOL.md §3): exchange the projected
//! service-account token (a federated credential) for an Entra ID access
//! token with the client-credentials grant.
//!
//! Invariants: the token file is re-read before every token request (the
//! kubelet rotates it; token requests are rare thanks to the cache); its
//! contents live in a [`SecretString`] and never reach an error or a log;
//! Entra errors are reported by their `error` code and AADSTS number only
//! (the description can echo input). Uses the remote client (HTTPS, proxy
//! from the environment, custom CAs). Sovereign clouds: set
//! `AZURE_AUTHORITY_HOST` / `[auth] authority_host` (US Gov
//! `https://login.microsoftonline.us/`, China `https://login.chinacloudapi.cn/`).

use std::io::Read as _;
use std::path::PathBuf;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{AccessToken, IdentityError, SourceInfo, TokenSource};
use crate::config::AuthConfig;
use crate::env::Env;
use crate::http::{RetryPolicy, RetryState};

/// Public-cloud login host (PROTOCOL.md §3).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";
/// `client_assertion_type` of a JWT bearer assertion (PROTOCOL.md §3).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Largest service-account token we read; real ones are ~1–2 KiB.
pub const MAX_ASSERTION_BYTES: u64 = 64 * 1024;
/// Largest token answer we read; real ones are ~2–4 KiB.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

pub struct WorkloadSource {
    pub token_file: PathBuf,
    pub client_id: String,
    pub tenant_id: String,
    /// Login host with a trailing `/`.
    pub authority: Url,
    http: reqwest::Client,
    retry: RetryPolicy,
}

impl WorkloadSource {
    /// From `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`, `[auth]
    /// client_id` else `AZURE_CLIENT_ID`, `[auth] authority_host` else
    /// `AZURE_AUTHORITY_HOST` else the public cloud. Missing pieces are
    /// named in the error.
    pub fn from_config(
        auth: &AuthConfig,
        env: &Env,
        http: reqwest::Client,
    ) -> Result<Self, IdentityError> {
        let missing =
            |what: &str| IdentityError::Config(format!("workload identity: {what} is not set"));
        let token_file = env
            .var("AZURE_FEDERATED_TOKEN_FILE")
            .ok_or_else(|| missing("AZURE_FEDERATED_TOKEN_FILE"))?;
        let tenant_id = env
            .var("AZURE_TENANT_ID")
            .ok_or_else(|| missing("AZURE_TENANT_ID"))?;
        if tenant_id.is_empty()
            || !tenant_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        {
            return Err(IdentityError::Config(
                "workload identity: AZURE_TENANT_ID must be a tenant GUID or domain name"
                    .to_owned(),
            ));
        }
        let client_id = auth
            .user_assigned
            .as_ref()
            .and_then(crate::config::UserAssigned::client_id)
            .map(str::to_owned)
            .or_else(|| env.var("AZURE_CLIENT_ID").map(str::to_owned))
            .ok_or_else(|| missing("AZURE_CLIENT_ID (or [auth] client_id)"))?;
        let authority = authority(auth, env)?;
        Ok(Self {
            token_file: PathBuf::from(token_file),
            client_id,
            tenant_id: tenant_id.to_owned(),
            authority,
            http,
            retry: RetryPolicy::himds(),
        })
    }

    /// Replace the retry schedule (tests shorten it).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn endpoint(&self) -> Result<Url, IdentityError> {
        self.authority
            .join(&format!("{}/oauth2/v2.0/token", self.tenant_id))
            .map_err(|e| IdentityError::Config(format!("workload identity token URL: {e}")))
    }

    /// The service-account token, read now (it rotates), bounded in size.
    fn read_assertion(&self) -> Result<SecretString, IdentityError> {
        let shown = self.token_file.display();
        let io = |e: std::io::Error| {
            IdentityError::Other(format!(
                "workload identity: cannot read the token file {shown} (AZURE_FEDERATED_TOKEN_FILE): {}",
                e.kind()
            ))
        };
        let file = std::fs::File::open(&self.token_file).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_ASSERTION_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            IdentityError::Other(format!(
                "workload identity: the token file {shown} is not text"
            ))
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() || text.len() as u64 > MAX_ASSERTION_BYTES {
            return Err(IdentityError::Other(format!(
                "workload identity: the token file {shown} is empty or larger than {MAX_ASSERTION_BYTES} bytes"
            )));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    fn form(&self, assertion: &SecretString, audience: &str) -> SecretString {
        let scope = format!("{}/.default", audience.trim_end_matches('/'));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_assertion", assertion.expose_secret())
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_id", &self.client_id)
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &scope)
            .finish();
        SecretString::from(body)
    }

    async fn attempt(&self, endpoint: &Url, audience: &str) -> Result<AccessToken, IdentityError> {
        let shown = endpoint.to_string();
        let body = self.form(&self.read_assertion()?, audience);
        let resp = self
            .http
            .post(endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.expose_secret().to_owned())
            .send()
            .await
            .map_err(|e| IdentityError::unreachable(&shown, &e))?;
        let status = resp.status();
        tracing::debug!(endpoint = %shown, status = status.as_u16(), "Entra ID answered");
        let bytes = super::read_answer(resp, MAX_TOKEN_RESPONSE_BYTES, &shown, "the answer", |e| {
            IdentityError::unreachable(&shown, e)
        })
        .await?;
        if status != StatusCode::OK {
            return Err(entra_error(&shown, status, &bytes));
        }
        super::parse_token(&shown, &bytes)
    }
}

/// `[auth] authority_host`, else `AZURE_AUTHORITY_HOST`, else the public
/// cloud; https only, with a trailing `/` so `join` appends.
fn authority(auth: &AuthConfig, env: &Env) -> Result<Url, IdentityError> {
    let mut url = match (&auth.authority_host, env.var("AZURE_AUTHORITY_HOST")) {
        (Some(u), _) => u.clone(),
        (None, Some(raw)) => Url::parse(raw).map_err(|e| {
            IdentityError::Config(format!("AZURE_AUTHORITY_HOST is not a valid URL ({e})"))
        })?,
        (None, None) => Url::parse(DEFAULT_AUTHORITY)
            .map_err(|e| IdentityError::Config(format!("default authority: {e}")))?,
    };
    if url.scheme() != "https" {
        return Err(IdentityError::Config(
            "workload identity: the authority host must be an https:// URL".to_owned(),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// An Entra error: quotes the `error` code and the AADSTS number only.
pub fn entra_error(endpoint: &str, status: StatusCode, body: &[u8]) -> IdentityError {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let code = json.as_ref().and_then(super::error_code);
    let aadsts = json.as_ref().and_then(aadsts_number);
    let parts: Vec<String> = code
        .into_iter()
        .chain(aadsts.map(|n| format!("AADSTS{n}")))
        .collect();
    let code = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    };
    IdentityError::Status {
        endpoint: endpoint.to_owned(),
        status: status.as_u16(),
        code,
        detail: hint(status, aadsts).to_owned(),
    }
}

/// The first of `error_codes`, else the `AADSTS<digits>` prefix of the
/// description.
fn aadsts_number(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = v
        .get("error_codes")
        .and_then(|c| c.as_array()?.first()?.as_u64())
    {
        return Some(n);
    }
    let desc = v.get("error_description")?.as_str()?;
    let rest = &desc[desc.find("AADSTS")? + "AADSTS".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn hint(status: StatusCode, aadsts: Option<u64>) -> &'static str {
    match aadsts {
        Some(700_016) => "the application (AZURE_CLIENT_ID) was not found in the tenant",
        Some(70_021) => {
            "no federated identity credential matches the service account token (check the credential's issuer and subject)"
        }
        Some(700_024) => "the service account token is expired or not yet valid",
        Some(90_002 | 900_023) => "the tenant (AZURE_TENANT_ID) was not found",
        _ if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
            "the login service is busy or failed (retried)"
        }
        _ => "the login was refused",
    }
}

fn retryable(e: &IdentityError) -> bool {
    match e {
        IdentityError::Unreachable { .. } => true,
        IdentityError::Status { status, .. } => matches!(*status, 429 | 500..=599),
        _ => false,
    }
}

#[async_trait::async_trait]
impl TokenSource for WorkloadSource {
    async fn fetch(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        let endpoint = self.endpoint()?;
        let mut retry = RetryState::new(&self.retry);
        // Bounded: RetryState refuses after max_attempts.
        super::with_retries(
            "Entra ID",
            &endpoint,
            || self.attempt(&endpoint, audience),
            |e| retryable(e).then(|| retry.next_wait(None)).flatten(),
        )
        .await
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "workload-identity",
            endpoint: self
                .endpoint()
                .map(|u| u.to_string())
                .unwrap_or_else(|_| self.authority.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn entra_errors_quote_codes_only() {
        let e = entra_error(
            "https://login/",
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_client","error_description":"AADSTS700016: Application with identifier 'CANARY' was not found","error_codes":[700016]}"#,
        );
        let m = e.to_string();
        assert!(m.contains("(invalid_client, AADSTS700016)"), "{m}");
        assert!(m.contains("AZURE_CLIENT_ID"), "{m}");
        assert!(!m.contains("CANARY"), "{m}");
        let e = entra_error(
            "https://login/",
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client","error_description":"AADSTS70021: No matching federated identity record found for presented assertion. CANARY"}"#,
        );
        let m = e.to_string();
        assert!(m.contains("AADSTS70021") && m.contains("federated"), "{m}");
        assert!(!m.contains("CANARY"));
        assert!(!retryable(&e));
        let e = entra_error("https://login/", StatusCode::SERVICE_UNAVAILABLE, b"<html>");
        assert!(retryable(&e));
    }

    fn auth() -> AuthConfig {
        AuthConfig::with_method(crate::config::AuthMethod::WorkloadIdentity)
    }

    #[test]
    fn env_config_and_sovereign_authority() {
        let http = crate::http::metadata_client().unwrap();
        let env = Env::empty()
            .with("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token")
            .with("AZURE_TENANT_ID", "t-1")
            .with("AZURE_CLIENT_ID", "c-env");
        let s = WorkloadSource::from_config(&auth(), &env, http.clone()).unwrap();
        assert_eq!(
            s.endpoint().unwrap().as_str(),
            "https://login.microsoftonline.com/t-1/oauth2/v2.0/token"
        );
        assert_eq!(s.client_id, "c-env");
        let env = env.with("AZURE_AUTHORITY_HOST", "https://login.chinacloudapi.cn");
        let mut a = auth();
        a.user_assigned = Some(crate::config::UserAssigned::ClientId("c-cfg".into()));
        let s = WorkloadSource::from_config(&a, &env, http.clone()).unwrap();
        assert_eq!(
            s.endpoint().unwrap().as_str(),
            "https://login.chinacloudapi.cn/t-1/oauth2/v2.0/token"
        );
        assert_eq!(s.client_id, "c-cfg");
        let bad = Env::empty()
            .with("AZURE_FEDERATED_TOKEN_FILE", "/x")
            .with("AZURE_TENANT_ID", "../evil")
            .with("AZURE_CLIENT_ID", "c");
        assert!(WorkloadSource::from_config(&auth(), &bad, http.clone()).is_err());
        let e = WorkloadSource::from_config(&auth(), &Env::empty(), http)
            .err()
            .unwrap();
        assert!(e.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"), "{e}");
    }
}
