//! Access tokens: issuing JWT-shaped tokens and checking them for Key Vault.
//!
//! A token is `base64url(header).base64url(payload).base64url(random sig)`
//! with the claims real Entra tokens carry and clients read (PROTOCOL.md §4:
//! `oid`, `tid`, `appid`, `aud`, `exp`, plus `iat`, `nbf`, `iss`, `sub`,
//! `azp` and a random `jti`). The signature is random bytes: nothing verifies
//! it; instead every issued token is remembered, and only remembered,
//! unexpired tokens with the right audience are accepted.
//!
//! Every token endpoint (Arc HIMDS today; IMDS and Entra later) calls
//! [`TokenIssuer::issue`]; only the response shape differs per endpoint.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::state::unix_now;

/// Default token lifetime: HIMDS/IMDS tokens live about 24 h (PROTOCOL.md §1
/// shows `expires_in: "86399"`).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(86_399);

/// The managed identity whose claims issued tokens carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub object_id: String,
    pub tenant_id: String,
    pub app_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            object_id: "11111111-2222-3333-4444-555555555555".to_owned(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            app_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".to_owned(),
        }
    }
}

/// A freshly issued token and its times (Unix seconds).
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub resource: String,
    pub not_before: u64,
    pub expires_on: u64,
    pub lifetime_secs: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"<redacted>")
            .field("resource", &self.resource)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

impl IssuedToken {
    /// The HIMDS/IMDS response body: every number as a STRING (PROTOCOL.md §1).
    pub fn metadata_json(&self) -> serde_json::Value {
        json!({
            "access_token": self.access_token,
            "expires_in": self.lifetime_secs.to_string(),
            "expires_on": self.expires_on.to_string(),
            "ext_expires_in": self.lifetime_secs.to_string(),
            "not_before": self.not_before.to_string(),
            "resource": self.resource,
            "token_type": "Bearer",
        })
    }

    /// The Entra ID response body: numbers as INTEGERS (PROTOCOL.md §3).
    pub fn entra_json(&self) -> serde_json::Value {
        json!({
            "token_type": "Bearer",
            "expires_in": self.lifetime_secs,
            "ext_expires_in": self.lifetime_secs,
            "access_token": self.access_token,
        })
    }
}

/// Why Key Vault rejects a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not a token this emulator issued (or invalidated since).
    Unknown,
    Expired,
    /// Issued for another resource; carries the token's `aud`.
    WrongAudience(String),
}

#[derive(Debug, Clone)]
struct Remembered {
    aud: String,
    exp: u64,
}

/// Issues tokens and remembers them.
#[derive(Debug)]
pub struct TokenIssuer {
    pub identity: Identity,
    pub lifetime: Duration,
    issued: HashMap<String, Remembered>,
}

impl Default for TokenIssuer {
    fn default() -> Self {
        Self {
            identity: Identity::default(),
            lifetime: DEFAULT_TOKEN_LIFETIME,
            issued: HashMap::new(),
        }
    }
}

impl TokenIssuer {
    /// Every access token issued so far (tests grep outputs for them).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.issued.keys().cloned().collect()
    }

    /// Issues a token for `resource` (the audience; a trailing `/.default`
    /// scope suffix is stripped, as Entra does).
    pub fn issue(&mut self, resource: &str) -> IssuedToken {
        let id = self.identity.clone();
        self.issue_as(resource, &id)
    }

    /// Issues a token for `resource` carrying the claims of `id` (a
    /// user-assigned or workload identity).
    pub fn issue_as(&mut self, resource: &str, id: &Identity) -> IssuedToken {
        let aud = resource
            .strip_suffix("/.default")
            .unwrap_or(resource)
            .to_owned();
        let now = unix_now();
        let lifetime_secs = self.lifetime.as_secs();
        let exp = now + lifetime_secs;
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": "kvsync-fake" });
        let payload = json!({
            "aud": aud,
            "iss": format!("https://sts.windows.net/{}/", id.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "oid": id.object_id,
            "sub": id.object_id,
            "tid": id.tenant_id,
            "appid": id.app_id,
            "azp": id.app_id,
            "idtyp": "app",
            "jti": random_b64(16),
        });
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            random_b64(64),
        );
        self.issued.insert(
            token.clone(),
            Remembered {
                aud: aud.clone(),
                exp,
            },
        );
        IssuedToken {
            access_token: token,
            resource: aud,
            not_before: now,
            expires_on: exp,
            lifetime_secs,
        }
    }

    /// Checks a bearer token for a service whose audience is `audience`.
    pub fn check(&self, token: &str, audience: &str) -> Result<(), TokenRejection> {
        let known = self.issued.get(token).ok_or(TokenRejection::Unknown)?;
        if known.exp <= unix_now() {
            return Err(TokenRejection::Expired);
        }
        if known.aud.trim_end_matches('/') != audience.trim_end_matches('/') {
            return Err(TokenRejection::WrongAudience(known.aud.clone()));
        }
        Ok(())
    }

    /// Forgets every issued token: Key Vault answers 401 to them from now on
    /// (tests of "on 401, refresh the token once and retry").
    pub fn invalidate_all(&mut self) {
        self.issued.clear();
    }
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn issued_token_is_jwt_shaped_with_claims() {
        let mut issuer = TokenIssuer::default();
        let t = issuer.issue("https://vault.azure.net/.default");
        let parts: Vec<&str> = t.access_token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["aud"], "https://vault.azure.net");
        assert_eq!(payload["oid"], issuer.identity.object_id);
        assert_eq!(payload["exp"].as_u64().unwrap(), t.expires_on);
        assert!(
            issuer
                .check(&t.access_token, "https://vault.azure.net")
                .is_ok()
        );
        assert_eq!(
            issuer.check(&t.access_token, "https://vault.azure.cn"),
            Err(TokenRejection::WrongAudience(
                "https://vault.azure.net".into()
            ))
        );
        assert_eq!(
            issuer.check("x.y.z", "https://vault.azure.net"),
            Err(TokenRejection::Unknown)
        );
    }

    #[test]
    fn zero_lifetime_tokens_are_expired() {
        let mut issuer = TokenIssuer {
            lifetime: Duration::ZERO,
            ..TokenIssuer::default()
        };
        let t = issuer.issue("https://vault.azure.net");
        assert_eq!(
            issuer.check(&t.access_token, "https://vault.azure.net"),
            Err(TokenRejection::Expired)
        );
    }
}
