//! Key Vault data-plane client (PROTOCOL.md §5): GET secrets (latest or
//! pinned version) over HTTPS with a bearer token for the audience derived
//! from the vault's DNS suffix. Maps every failure to an actionable
//! [`VaultError`]; retries transient ones with bounded backoff
//! ([`transport`]). A token is only ever sent to a host whose audience is
//! known ([`address::audience_for`]); an unknown host gets no request at
//! all. Secret values go straight into [`SecretString`]; no value, token or
//! service message text reaches an error or a log line (error codes do).
//! [`VaultClient`] is cheap to share behind an `Arc`; bounding concurrency
//! is the caller's job.

pub mod address;
pub mod models;
pub mod objects;
pub mod transport;

pub use self::address::{VaultUrl, VaultUrlError};
pub use objects::{CertificateBundle, KeyBundle};

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;
use url::Url;

use crate::http::RetryPolicy;
use crate::identity::cache::TokenCache;
use crate::identity::{AccessToken, IdentityError, claims};
use transport::{Ctx, Failure, Outcome};

/// Key Vault api-version (PROTOCOL.md §5: the Rust SDK 1.0 default).
pub const API_VERSION: &str = "2025-07-01";

/// Page size asked of `GET /secrets` (PROTOCOL.md §5: up to 25 per call).
pub const LIST_PAGE_SIZE: u32 = 25;
/// Pages followed before giving up: 25 × 400 = 10,000 secrets, far above
/// any vault kvsync syncs from; bounds a server that loops its nextLink.
pub const MAX_LIST_PAGES: usize = 400;

/// One entry of the secret list: no value, enough for change detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretListItem {
    pub name: String,
    pub updated: Option<i64>,
    pub enabled: bool,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// A secret as Key Vault returned it. `value` is secret; the rest is not.
#[derive(Clone)]
pub struct SecretBundle {
    pub value: SecretString,
    pub name: String,
    pub version: String,
    pub id: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub created: Option<i64>,
    pub updated: Option<i64>,
    pub not_before: Option<i64>,
    pub expires: Option<i64>,
    /// Set on secrets that back a certificate.
    pub kid: Option<String>,
    pub managed: bool,
}

impl std::fmt::Debug for SecretBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBundle")
            .field("value", &"[REDACTED]")
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error(
        "vault {vault}: no token audience known for this host; set [auth] audience in the config if this is really a Key Vault"
    )]
    UnknownAudience { vault: String },
    #[error(
        "vault {vault}: access to secret '{secret}' denied (HTTP 403 {code}) for identity {identity}: grant it the role 'Key Vault Secrets User' on the vault (or an access policy with secret Get)"
    )]
    Forbidden {
        vault: String,
        secret: String,
        code: String,
        identity: String,
    },
    #[error(
        "vault {vault}: the vault firewall blocks this host (HTTP 403 ForbiddenByFirewall); allow its address or use a private endpoint"
    )]
    Firewall { vault: String },
    #[error("vault {vault}: secret '{secret}'{version} is disabled (HTTP 403 SecretDisabled)")]
    Disabled {
        vault: String,
        secret: String,
        version: String,
    },
    #[error("vault {vault}: secret '{secret}'{version} not found (HTTP 404 {code})")]
    NotFound {
        vault: String,
        secret: String,
        version: String,
        code: String,
    },
    #[error(
        "vault {vault}: listing secrets denied (HTTP 403 {code}) for identity {identity}: grant it 'Key Vault Secrets User' (or an access policy with secret List) for change detection"
    )]
    ListForbidden {
        vault: String,
        code: String,
        identity: String,
    },
    #[error(
        "vault {vault}: access to {} '{name}' denied (HTTP 403 {code}) for identity {identity}: {}", kind.noun(), kind.grant()
    )]
    ObjectForbidden {
        vault: String,
        kind: objects::ObjectKind,
        name: String,
        code: String,
        identity: String,
    },
    #[error("vault {vault}: {} '{name}'{version} not found (HTTP 404 {code})", kind.noun())]
    ObjectNotFound {
        vault: String,
        kind: objects::ObjectKind,
        name: String,
        version: String,
        code: String,
    },
    #[error(
        "vault {vault}: selection '{selection}' cannot list the vault's secrets (HTTP 403 {code}) for identity {identity}: a selection needs the secret list permission (data action Microsoft.KeyVault/vaults/secrets/readMetadata/action, in the roles 'Key Vault Secrets User' and 'Key Vault Reader'; or an access policy with secret List)"
    )]
    SelectionForbidden {
        vault: String,
        selection: String,
        code: String,
        identity: String,
    },
    #[error("vault {vault}: still unauthorized after refreshing the token (HTTP 401 {code})")]
    Unauthorized { vault: String, code: String },
    #[error("vault {vault}: throttled (HTTP 429) and still throttled after retries")]
    Throttled { vault: String },
    #[error("vault {vault}: HTTP {status} {code} for secret '{secret}'")]
    Status {
        vault: String,
        secret: String,
        status: u16,
        code: String,
    },
    #[error("vault {vault}: request failed: {detail}")]
    Transport { vault: String, detail: String },
    #[error("vault {vault}: malformed answer: {detail}")]
    Malformed { vault: String, detail: String },
    #[error(
        "vault {vault}: refused: the 401 challenge names resource {resource}, which does not match this vault's host"
    )]
    ChallengeMismatch { vault: String, resource: String },
}

impl VaultError {
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Identity(e) => e.is_transient(),
            VaultError::Throttled { .. } | VaultError::Transport { .. } => true,
            VaultError::Status { status, .. } => *status >= 500,
            VaultError::Malformed { .. } => true,
            _ => false,
        }
    }
}

pub struct VaultClient {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    /// Explicit audience for non-standard hosts (`[auth] audience`).
    explicit_audience: Option<String>,
    /// Hosts allowed to receive a token for `explicit_audience` (`None`:
    /// every host, for clients built without a config).
    audience_hosts: Option<Vec<String>>,
    retry: RetryPolicy,
}

impl VaultClient {
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<TokenCache>,
        explicit_audience: Option<String>,
    ) -> Self {
        Self {
            http,
            tokens,
            explicit_audience,
            audience_hosts: None,
            retry: RetryPolicy::vault(),
        }
    }

    /// Replace the retry schedule (tests shorten it).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Send a token for the explicit audience only to these hosts
    /// (`host` or `host:port`; [`crate::config::AuthConfig::audience_hosts`]).
    pub fn with_audience_hosts(mut self, hosts: Vec<String>) -> Self {
        self.audience_hosts = Some(hosts);
        self
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    fn audience(&self, vault: &Url) -> Result<String, VaultError> {
        let allowed = self.audience_hosts.as_ref().is_none_or(|hosts| {
            crate::config::host_port(vault).is_some_and(|h| hosts.contains(&h))
        });
        let explicit = self.explicit_audience.as_deref().filter(|_| allowed);
        self::address::audience_for(vault, explicit).ok_or_else(|| VaultError::UnknownAudience {
            vault: vault_label(vault),
        })
    }

    /// GET a secret, latest (`version = None`) or pinned.
    pub async fn get_secret(
        &self,
        vault: &Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretBundle, VaultError> {
        let audience = self.audience(vault)?;
        let label = vault_label(vault);
        let url = secret_url(vault, name, version).ok_or_else(|| VaultError::Malformed {
            vault: label.clone(),
            detail: "the vault URL cannot carry a path".to_owned(),
        })?;
        let ctx = Ctx {
            vault: label.clone(),
            audience: &audience,
            secret: name,
        };
        let body = match self.execute(&ctx, &url).await? {
            Outcome::Ok(body) => body,
            Outcome::Failed(f) => return Err(map_get_failure(&label, name, version, f)),
        };
        let raw = models::parse_bundle(&body).map_err(|detail| VaultError::Malformed {
            vault: label,
            detail: detail.to_owned(),
        })?;
        Ok(SecretBundle {
            value: SecretString::from(raw.value),
            name: raw.name,
            version: raw.version,
            id: raw.id,
            content_type: raw.content_type,
            tags: raw.tags,
            enabled: raw.attributes.enabled.unwrap_or(true),
            created: raw.attributes.created,
            updated: raw.attributes.updated,
            not_before: raw.attributes.not_before,
            expires: raw.attributes.expires,
            kid: raw.kid,
            managed: raw.managed,
        })
    }

    /// List the vault's secrets (names, `updated`, no values), following
    /// `nextLink` with our api-version, at most [`MAX_LIST_PAGES`] pages.
    pub async fn list_secrets(&self, vault: &Url) -> Result<Vec<SecretListItem>, VaultError> {
        let audience = self.audience(vault)?;
        let label = vault_label(vault);
        let malformed = |detail: &str| VaultError::Malformed {
            vault: label.clone(),
            detail: detail.to_owned(),
        };
        let mut url =
            list_url(vault).ok_or_else(|| malformed("the vault URL cannot carry a path"))?;
        let ctx = Ctx {
            vault: label.clone(),
            audience: &audience,
            secret: "(list)",
        };
        let mut out = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let body = match self.execute(&ctx, &url).await? {
                Outcome::Ok(body) => body,
                Outcome::Failed(f) => return Err(map_list_failure(&label, f)),
            };
            let page = models::parse_list_page(&body).map_err(malformed)?;
            out.extend(page.items.into_iter().map(|i| SecretListItem {
                name: i.name,
                updated: i.attributes.updated,
                enabled: i.attributes.enabled.unwrap_or(true),
                content_type: i.content_type,
                tags: i.tags,
            }));
            match page.next_link {
                None => return Ok(out),
                Some(link) => url = next_url(vault, &link).map_err(malformed)?,
            }
        }
        Err(malformed(&format!(
            "the secret list did not end within {MAX_LIST_PAGES} pages"
        )))
    }
}

/// `host[:port]` of a vault, as errors name it.
pub fn vault_label(vault: &Url) -> String {
    match (vault.host_str(), vault.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => vault.to_string(),
    }
}

/// `{vault}/secrets/{name}/?api-version=` (latest: trailing slash, as the
/// SDKs send) or `{vault}/secrets/{name}/{version}?api-version=`.
pub fn secret_url(vault: &Url, name: &str, version: Option<&str>) -> Option<Url> {
    vault_url(vault, &["secrets", name, version.unwrap_or("")])
}

fn list_url(vault: &Url) -> Option<Url> {
    let mut url = vault_url(vault, &["secrets"])?;
    url.query_pairs_mut()
        .append_pair("maxresults", &LIST_PAGE_SIZE.to_string());
    Some(url)
}

/// `{vault}/{segments...}?api-version=` (each segment percent-encoded);
/// `None` when the vault URL cannot carry a path.
pub(crate) fn vault_url(vault: &Url, segments: &[&str]) -> Option<Url> {
    let mut url = vault.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(segments);
    url.query_pairs_mut()
        .append_pair("api-version", API_VERSION);
    Some(url)
}

/// The `nextLink` with our api-version; it must stay on the vault's origin
/// (scheme, host, port), or the token would go elsewhere.
fn next_url(vault: &Url, link: &str) -> Result<Url, &'static str> {
    let mut url = Url::parse(link).map_err(|_| "field `nextLink` is not a URL")?;
    let same_origin = url.scheme() == vault.scheme()
        && url.host_str().map(str::to_ascii_lowercase)
            == vault.host_str().map(str::to_ascii_lowercase)
        && url.port_or_known_default() == vault.port_or_known_default();
    if !same_origin {
        return Err("field `nextLink` points to another host; refusing to send the token there");
    }
    // Keep the service's own encoding of the other parameters ($skiptoken).
    let mut query = format!("api-version={API_VERSION}");
    for part in url.query().unwrap_or("").split('&') {
        let key = part.split('=').next().unwrap_or("");
        if !part.is_empty() && !key.eq_ignore_ascii_case("api-version") {
            query.push('&');
            query.push_str(part);
        }
    }
    url.set_query(Some(&query));
    Ok(url)
}

/// `Forbidden/ForbiddenByRbac`, or `(no error code)`.
pub fn code_label(codes: &[String]) -> String {
    if codes.is_empty() {
        "(no error code)".to_owned()
    } else {
        codes.join("/")
    }
}

/// The identity a token stands for, from its `oid` (and app id) claims.
pub fn identity_label(token: &AccessToken) -> String {
    use secrecy::ExposeSecret;
    let claims = claims::decode(token.token.expose_secret()).unwrap_or_default();
    let app = claims.appid.or(claims.azp);
    match (claims.oid, app) {
        (Some(oid), Some(app)) => format!("{oid} (app id {app})"),
        (Some(oid), None) => oid,
        (None, _) => "(unknown: the token carries no oid claim)".to_owned(),
    }
}

pub(crate) fn has_code(codes: &[String], code: &str) -> bool {
    codes.iter().any(|c| c.eq_ignore_ascii_case(code))
}

fn map_get_failure(vault: &str, secret: &str, version: Option<&str>, f: Failure) -> VaultError {
    let version_label = version.map(|v| format!(" version {v}")).unwrap_or_default();
    match f.status.as_u16() {
        403 if has_code(&f.codes, "ForbiddenByFirewall") => VaultError::Firewall {
            vault: vault.to_owned(),
        },
        403 if has_code(&f.codes, "SecretDisabled") => VaultError::Disabled {
            vault: vault.to_owned(),
            secret: secret.to_owned(),
            version: version_label,
        },
        403 => VaultError::Forbidden {
            vault: vault.to_owned(),
            secret: secret.to_owned(),
            code: code_label(&f.codes),
            identity: identity_label(&f.token),
        },
        404 => VaultError::NotFound {
            vault: vault.to_owned(),
            secret: secret.to_owned(),
            version: version_label,
            code: code_label(&f.codes),
        },
        status => VaultError::Status {
            vault: vault.to_owned(),
            secret: secret.to_owned(),
            status,
            code: code_label(&f.codes),
        },
    }
}

fn map_list_failure(vault: &str, f: Failure) -> VaultError {
    match f.status.as_u16() {
        403 if has_code(&f.codes, "ForbiddenByFirewall") => VaultError::Firewall {
            vault: vault.to_owned(),
        },
        403 => VaultError::ListForbidden {
            vault: vault.to_owned(),
            code: code_label(&f.codes),
            identity: identity_label(&f.token),
        },
        status => VaultError::Status {
            vault: vault.to_owned(),
            secret: "(list)".to_owned(),
            status,
            code: code_label(&f.codes),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn urls() {
        let v = Url::parse("https://v.vault.azure.net").unwrap();
        assert_eq!(
            secret_url(&v, "db", None).unwrap().as_str(),
            "https://v.vault.azure.net/secrets/db/?api-version=2025-07-01"
        );
        assert_eq!(
            secret_url(&v, "db", Some("abc")).unwrap().as_str(),
            "https://v.vault.azure.net/secrets/db/abc?api-version=2025-07-01"
        );
        assert_eq!(
            secret_url(&v, "a/../b", None).unwrap().path(),
            "/secrets/a%2F..%2Fb/"
        );
        assert_eq!(
            list_url(&v).unwrap().as_str(),
            "https://v.vault.azure.net/secrets?api-version=2025-07-01&maxresults=25"
        );
    }

    #[test]
    fn next_link_gets_our_api_version_and_stays_home() {
        let v = Url::parse("https://v.vault.azure.net").unwrap();
        let n = next_url(
            &v,
            "https://v.vault.azure.net:443/secrets?api-version=7.2&$skiptoken=abc&maxresults=25",
        )
        .unwrap();
        assert_eq!(
            n.as_str(),
            "https://v.vault.azure.net/secrets?api-version=2025-07-01&$skiptoken=abc&maxresults=25"
        );
        assert!(next_url(&v, "https://evil.example.com/secrets?x").is_err());
        assert!(next_url(&v, "http://v.vault.azure.net/secrets").is_err());
    }

    #[test]
    fn forbidden_message_is_pinned() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"oid":"0a1b2c3d-0000-4000-8000-00000000abcd"}"#);
        let token = AccessToken {
            token: format!("e30.{payload}.sig").into(),
            expires_on: std::time::SystemTime::now(),
        };
        let err = map_get_failure(
            "v.vault.azure.net",
            "db-password",
            None,
            Failure {
                status: reqwest::StatusCode::FORBIDDEN,
                codes: vec!["Forbidden".into(), "ForbiddenByRbac".into()],
                token,
            },
        );
        assert_eq!(
            err.to_string(),
            "vault v.vault.azure.net: access to secret 'db-password' denied (HTTP 403 Forbidden/ForbiddenByRbac) for identity 0a1b2c3d-0000-4000-8000-00000000abcd: grant it the role 'Key Vault Secrets User' on the vault (or an access policy with secret Get)"
        );
    }
}
