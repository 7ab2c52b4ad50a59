//! One Key Vault request with its retry rules (PROTOCOL.md §5): bearer token
//! from the cache; a 401 invalidates it and retries once with a fresh one
//! (refusing a challenge that names another resource); 429 waits
//! `Retry-After` (or backs off); 5xx, timeouts and connection errors back
//! off. Every loop is bounded by the [`crate::http::RetryPolicy`]. Other statuses are
//! returned to the caller for mapping. Never logs a token or a body.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use std::time::Duration;
use url::Url;

use super::{VaultClient, VaultError};
use crate::http::{BodyError, RetryState};
use crate::identity::AccessToken;

/// Largest answer we read: values are ≤ 25 KB (PROTOCOL.md §5), list pages
/// hold 25 entries; anything this big is not Key Vault.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A non-retried, non-200 answer, for the caller to map.
pub struct Failure {
    pub status: StatusCode,
    pub codes: Vec<String>,
    /// The token the request carried (for the identity in messages).
    pub token: AccessToken,
}

pub enum Outcome {
    Ok(Vec<u8>),
    Failed(Failure),
}

/// What errors say about the request.
pub struct Ctx<'a> {
    pub vault: String,
    pub audience: &'a str,
    /// Secret name, or a label such as `(list)`.
    pub secret: &'a str,
}

impl VaultClient {
    /// Send GET `url` until it succeeds, fails for good, or retries run out.
    pub(super) async fn execute(&self, ctx: &Ctx<'_>, url: &Url) -> Result<Outcome, VaultError> {
        let mut token = self.tokens.get(ctx.audience).await?;
        let mut refreshed = false;
        let mut retry = RetryState::new(&self.retry);
        loop {
            let wait = match self.send(url, &token).await {
                Err(detail) => retry.next_wait(None).ok_or_else(|| VaultError::Transport {
                    vault: ctx.vault.clone(),
                    detail,
                })?,
                Ok((status, headers, body)) => match status.as_u16() {
                    200 => return Ok(Outcome::Ok(body)),
                    401 => {
                        check_challenge(ctx, url, &headers)?;
                        if refreshed {
                            return Err(VaultError::Unauthorized {
                                vault: ctx.vault.clone(),
                                code: super::code_label(&super::models::error_codes(&body)),
                            });
                        }
                        self.tokens.invalidate_if(ctx.audience, &token).await;
                        token = self.tokens.get(ctx.audience).await?;
                        refreshed = true;
                        continue;
                    }
                    429 => retry.next_wait(retry_after(&headers)).ok_or_else(|| {
                        VaultError::Throttled {
                            vault: ctx.vault.clone(),
                        }
                    })?,
                    500..=599 => retry.next_wait(None).ok_or_else(|| VaultError::Status {
                        vault: ctx.vault.clone(),
                        secret: ctx.secret.to_owned(),
                        status: status.as_u16(),
                        code: super::code_label(&super::models::error_codes(&body)),
                    })?,
                    _ => {
                        return Ok(Outcome::Failed(Failure {
                            status,
                            codes: super::models::error_codes(&body),
                            token,
                        }));
                    }
                },
            };
            tracing::debug!(vault = %ctx.vault, retry = retry.retries(), ?wait, "retrying Key Vault request");
            tokio::time::sleep(wait).await;
        }
    }

    /// One GET. Transport failures come back as a short description that
    /// holds neither the URL's query nor any header.
    async fn send(
        &self,
        url: &Url,
        token: &AccessToken,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), String> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.token.expose_secret()))
            .map_err(|_| "the access token is not a valid header value".to_owned())?;
        auth.set_sensitive(true);
        let resp = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::AUTHORIZATION, auth)
            .send()
            .await
            .map_err(|e| crate::http::transport_detail(&e))?;
        let status = resp.status();
        tracing::debug!(
            host = url.host_str().unwrap_or(""),
            path = url.path(),
            status = status.as_u16(),
            "Key Vault answered"
        );
        let headers = resp.headers().clone();
        let body = crate::http::read_body_limited(resp, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(n) => format!("the answer is larger than {n} bytes"),
                BodyError::Transport(e) => crate::http::transport_detail(&e),
            })?;
        Ok((status, headers, body))
    }
}

/// `Retry-After` in whole seconds (the form Key Vault sends); dates and
/// junk are ignored (we fall back to backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// Refuse a 401 challenge naming a resource this vault does not belong to
/// (PROTOCOL.md §5): its host must be a suffix of the vault's host, or it
/// must be exactly the audience we use (explicitly configured hosts).
fn check_challenge(ctx: &Ctx<'_>, url: &Url, headers: &HeaderMap) -> Result<(), VaultError> {
    let Some(header) = headers
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
    else {
        return Ok(());
    };
    let Some(resource) = challenge_resource(header) else {
        return Ok(());
    };
    let trimmed = |s: &str| {
        s.trim_end_matches("/.default")
            .trim_end_matches('/')
            .to_ascii_lowercase()
    };
    if trimmed(&resource) == trimmed(ctx.audience) {
        return Ok(());
    }
    let vault_host = url.host_str().unwrap_or("").to_ascii_lowercase();
    let resource_host = Url::parse(&resource)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    match resource_host {
        Some(rh) if vault_host == rh || vault_host.ends_with(&format!(".{rh}")) => Ok(()),
        _ => Err(VaultError::ChallengeMismatch {
            vault: ctx.vault.clone(),
            resource: sanitize(&resource),
        }),
    }
}

/// `resource` (or `scope`) of a `Bearer k="v", k2=v2` challenge.
pub fn challenge_resource(header: &str) -> Option<String> {
    let (scheme, params) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut scope = None;
    for part in params.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "resource" => return Some(v),
            "scope" => scope = Some(v),
            _ => {}
        }
    }
    scope
}

/// A challenge value shown in a message: printable ASCII, bounded.
fn sanitize(s: &str) -> String {
    /// Enough for any real resource URI.
    const MAX_SHOWN: usize = 200;
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_SHOWN)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn challenge_parsing() {
        assert_eq!(
            challenge_resource(r#"Bearer authorization="https://login.windows.net/t", resource="https://vault.azure.net""#).as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            challenge_resource(
                r#"Bearer authorization_uri="x", scope="https://vault.azure.net/.default""#
            )
            .as_deref(),
            Some("https://vault.azure.net/.default")
        );
        assert_eq!(challenge_resource("Basic realm=x"), None);
    }

    fn check(vault: &str, audience: &str, header: &str) -> Result<(), VaultError> {
        let url = Url::parse(vault).unwrap();
        let ctx = Ctx {
            vault: "v".into(),
            audience,
            secret: "s",
        };
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::WWW_AUTHENTICATE,
            HeaderValue::from_str(header).unwrap(),
        );
        check_challenge(&ctx, &url, &h)
    }

    #[test]
    fn challenge_resource_must_match_vault() {
        let aud = "https://vault.azure.net";
        assert!(
            check(
                "https://v.vault.azure.net/",
                aud,
                r#"Bearer resource="https://vault.azure.net""#
            )
            .is_ok()
        );
        assert!(
            check(
                "https://v.vault.azure.net/",
                aud,
                r#"Bearer scope="https://vault.azure.net/.default""#
            )
            .is_ok()
        );
        assert!(matches!(
            check(
                "https://v.vault.azure.net/",
                aud,
                r#"Bearer resource="https://evil.example.com""#
            ),
            Err(VaultError::ChallengeMismatch { .. })
        ));
        // Explicit audience for a non-standard host.
        assert!(
            check(
                "https://localhost:1/",
                "https://kv.test",
                r#"Bearer resource="https://kv.test""#
            )
            .is_ok()
        );
        assert!(
            check(
                "https://localhost:1/",
                "https://kv.test",
                r#"Bearer resource="https://vault.azure.net""#
            )
            .is_err()
        );
    }

    #[test]
    fn retry_after_seconds_only() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
