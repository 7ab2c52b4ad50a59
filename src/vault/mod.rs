//! Key Vault data-plane client (PROTOCOL.md §5): GET secrets (latest or
//! pinned version) over HTTPS with a bearer token for the audience derived
//! from the vault's DNS suffix. Maps every failure to an actionable
//! [`VaultError`]; retries transient ones with bounded backoff.

pub mod models;

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;
use url::Url;

use crate::identity::IdentityError;
use crate::identity::cache::TokenCache;

/// Key Vault api-version (PROTOCOL.md §5: the Rust SDK 1.0 default).
pub const API_VERSION: &str = "2025-07-01";

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
        }
    }

    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    /// GET a secret, latest (`version = None`) or pinned.
    pub async fn get_secret(
        &self,
        vault: &Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretBundle, VaultError> {
        let _ = (vault, name, version, &self.http, &self.explicit_audience);
        unimplemented!("VaultClient::get_secret")
    }
}
