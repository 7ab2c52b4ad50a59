//! Key Vault objects other than secrets: the public part of a key
//! (`GET /keys/{name}[/{version}]`, the JWK) and a certificate's public
//! bundle (`GET /certificates/{name}[/{version}]`, the leaf `cer`). Neither
//! carries private key material; nothing here asks for it. Same transport,
//! retries and audience rules as secrets ([`super::transport`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use url::Url;

use super::transport::{Ctx, Failure, Outcome};
use super::{
    VaultClient, VaultError, code_label, has_code, identity_label, vault_label, vault_url,
};

/// The kind of object a request was for, with the words errors use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Key,
    Certificate,
}

impl ObjectKind {
    fn segment(self) -> &'static str {
        match self {
            ObjectKind::Key => "keys",
            ObjectKind::Certificate => "certificates",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Key => "key",
            ObjectKind::Certificate => "certificate",
        }
    }

    /// What to grant when a GET is forbidden (Azure built-in roles and
    /// access-policy permissions, "Azure built-in roles for Key Vault data
    /// plane operations").
    pub fn grant(self) -> &'static str {
        match self {
            ObjectKind::Key => {
                "grant it a role with keys/read such as 'Key Vault Crypto User' (or an access policy with key Get)"
            }
            ObjectKind::Certificate => {
                "grant it the role 'Key Vault Certificate User' (or an access policy with certificate Get)"
            }
        }
    }
}

/// A key's public part as Key Vault returned it.
#[derive(Clone, Debug)]
pub struct KeyBundle {
    pub name: String,
    pub version: String,
    /// The `key` object (JWK); only its public members are ever used.
    pub jwk: Value,
    pub enabled: bool,
    pub updated: Option<i64>,
    pub expires: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

/// A certificate's public bundle: the leaf, no key, no chain.
#[derive(Clone, Debug)]
pub struct CertificateBundle {
    pub name: String,
    pub version: String,
    /// The leaf certificate, DER (`cer`).
    pub cer: Vec<u8>,
    pub enabled: bool,
    pub updated: Option<i64>,
    /// `policy.key_props.exportable`, when the answer carries a policy.
    pub exportable: Option<bool>,
}

/// `(name, version)` of `https://v/{segment}/{name}/{version}`.
fn split_object_id(id: &str, segment: &str) -> Option<(String, String)> {
    let url = Url::parse(id).ok()?;
    let segs: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [s, name, version] if *s == segment => Some(((*name).to_owned(), (*version).to_owned())),
        _ => None,
    }
}

fn attr_i64(obj: &Value, key: &str) -> Option<i64> {
    obj.get("attributes")?.get(key)?.as_i64()
}

fn enabled(obj: &Value) -> bool {
    obj.get("attributes")
        .and_then(|a| a.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

fn tags(obj: &Value) -> BTreeMap<String, String> {
    obj.get("tags")
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Parse a `GET /keys/{name}` answer.
pub fn parse_key(body: &[u8]) -> Result<KeyBundle, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON")?;
    let key = v
        .get("key")
        .filter(|k| k.is_object())
        .ok_or("missing object `key`")?;
    let kid = key
        .get("kid")
        .and_then(Value::as_str)
        .ok_or("missing string `key.kid`")?;
    let (name, version) =
        split_object_id(kid, "keys").ok_or("`key.kid` is not a key identifier")?;
    Ok(KeyBundle {
        name,
        version,
        jwk: key.clone(),
        enabled: enabled(&v),
        updated: attr_i64(&v, "updated"),
        expires: attr_i64(&v, "exp"),
        tags: tags(&v),
    })
}

/// Parse a `GET /certificates/{name}` answer.
pub fn parse_certificate(body: &[u8]) -> Result<CertificateBundle, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON")?;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or("missing string `id`")?;
    let (name, version) =
        split_object_id(id, "certificates").ok_or("`id` is not a certificate identifier")?;
    let cer = v
        .get("cer")
        .and_then(Value::as_str)
        .ok_or("missing string `cer`")?;
    let cer = STANDARD
        .decode(cer.trim())
        .map_err(|_| "`cer` is not base64")?;
    let exportable = v
        .pointer("/policy/key_props/exportable")
        .and_then(Value::as_bool);
    Ok(CertificateBundle {
        name,
        version,
        cer,
        enabled: enabled(&v),
        updated: attr_i64(&v, "updated"),
        exportable,
    })
}

impl VaultClient {
    /// GET `/{keys|certificates}/{name}[/{version}]`; the body on success.
    async fn get_object(
        &self,
        kind: ObjectKind,
        vault: &Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<Vec<u8>, VaultError> {
        let audience = self.audience(vault)?;
        let label = vault_label(vault);
        let url =
            vault_url(vault, &[kind.segment(), name, version.unwrap_or("")]).ok_or_else(|| {
                VaultError::Malformed {
                    vault: label.clone(),
                    detail: "the vault URL cannot carry a path".to_owned(),
                }
            })?;
        let ctx = Ctx {
            vault: label.clone(),
            audience: &audience,
            secret: name,
        };
        match self.execute(&ctx, &url).await? {
            Outcome::Ok(body) => Ok(body),
            Outcome::Failed(f) => Err(map_object_failure(kind, &label, name, version, f)),
        }
    }

    /// The public part of a key (JWK), latest or pinned version.
    pub async fn get_key(
        &self,
        vault: &Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyBundle, VaultError> {
        let body = self
            .get_object(ObjectKind::Key, vault, name, version)
            .await?;
        parse_key(&body).map_err(|detail| VaultError::Malformed {
            vault: vault_label(vault),
            detail: detail.to_owned(),
        })
    }

    /// A certificate's public bundle (the leaf), latest or pinned version.
    pub async fn get_certificate(
        &self,
        vault: &Url,
        name: &str,
        version: Option<&str>,
    ) -> Result<CertificateBundle, VaultError> {
        let body = self
            .get_object(ObjectKind::Certificate, vault, name, version)
            .await?;
        parse_certificate(&body).map_err(|detail| VaultError::Malformed {
            vault: vault_label(vault),
            detail: detail.to_owned(),
        })
    }
}

fn map_object_failure(
    kind: ObjectKind,
    vault: &str,
    name: &str,
    version: Option<&str>,
    f: Failure,
) -> VaultError {
    let version_label = version.map(|v| format!(" version {v}")).unwrap_or_default();
    match f.status.as_u16() {
        403 if has_code(&f.codes, "ForbiddenByFirewall") => VaultError::Firewall {
            vault: vault.to_owned(),
        },
        403 => VaultError::ObjectForbidden {
            vault: vault.to_owned(),
            kind,
            name: name.to_owned(),
            code: code_label(&f.codes),
            identity: identity_label(&f.token),
        },
        404 => VaultError::ObjectNotFound {
            vault: vault.to_owned(),
            kind,
            name: name.to_owned(),
            version: version_label,
            code: code_label(&f.codes),
        },
        status => VaultError::Status {
            vault: vault.to_owned(),
            secret: format!("{} {name}", kind.noun()),
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
    fn key_and_certificate_bundles() {
        let k = parse_key(br#"{"key":{"kid":"https://v.vault.azure.net/keys/jwt/0123","kty":"EC","crv":"P-256","x":"AA","y":"AA"},"attributes":{"enabled":true,"updated":7},"tags":{"a":"b"}}"#).unwrap();
        assert_eq!((k.name.as_str(), k.version.as_str()), ("jwt", "0123"));
        assert_eq!(k.updated, Some(7));
        assert_eq!(k.tags.get("a").map(String::as_str), Some("b"));
        assert!(parse_key(br#"{"key":{"kid":"https://v/secrets/a/b"}}"#).is_err());
        let c = parse_certificate(br#"{"id":"https://v/certificates/web/99","cer":"AAEC","policy":{"key_props":{"exportable":false}}}"#).unwrap();
        assert_eq!(c.cer, vec![0, 1, 2]);
        assert_eq!(c.exportable, Some(false));
        assert!(
            parse_certificate(br#"{"id":"https://v/certificates/web/99","cer":"!!"}"#).is_err()
        );
    }
}
