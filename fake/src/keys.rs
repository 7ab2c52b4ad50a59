//! Key Vault key objects (the public part only): `GET /keys/{name}[/{version}]`
//! answers `{"key":{"kid","kty","key_ops","n","e" | "crv","x","y"},
//! "attributes":{…},"tags":{…}}` as the service does (JSON Web Key, RFC 7517;
//! `n`, `e`, `x`, `y` base64url without padding; `x`/`y` as long as the
//! curve's field, `n` without a leading zero octet).
//!
//! Invariants: keys are made by the `openssl` binary (RSA 2048, EC P-256,
//! P-384, P-521; ring cannot make RSA or P-521 keys) and only their public
//! half is kept: the emulator, like Key Vault for a non-exportable key,
//! never serves private key material. The newest version is the current one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::faults::kv_error;
use crate::state::{Shared, lock, unix_now};
use crate::vault::authorize;

/// Key type and size/curve of [`crate::Emulator::create_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KeyKind {
    Rsa2048,
    EcP256,
    EcP384,
    EcP521,
}

impl KeyKind {
    /// `(kty, crv)` as Key Vault names them.
    fn jwk_type(self) -> (&'static str, Option<&'static str>) {
        match self {
            KeyKind::Rsa2048 => ("RSA", None),
            KeyKind::EcP256 => ("EC", Some("P-256")),
            KeyKind::EcP384 => ("EC", Some("P-384")),
            KeyKind::EcP521 => ("EC", Some("P-521")),
        }
    }

    /// Bytes of one EC coordinate (the field size, rounded up to octets).
    fn coordinate_len(self) -> usize {
        match self {
            KeyKind::Rsa2048 => 0,
            KeyKind::EcP256 => 32,
            KeyKind::EcP384 => 48,
            KeyKind::EcP521 => 66,
        }
    }

    fn genpkey_args(self) -> Vec<&'static str> {
        match self {
            KeyKind::Rsa2048 => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyKind::EcP256 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyKind::EcP384 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyKind::EcP521 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        }
    }

    /// Key Vault's default operations for a key of this type.
    fn key_ops(self) -> &'static [&'static str] {
        match self {
            KeyKind::Rsa2048 => &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ],
            _ => &["sign", "verify"],
        }
    }
}

/// The public numbers of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicNumbers {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { x: Vec<u8>, y: Vec<u8> },
}

/// What [`crate::Emulator::create_key`] returns: public facts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedKey {
    pub name: String,
    pub version: String,
    /// The JWK exactly as `GET /keys/{name}` serves it (the `key` object).
    pub jwk: Value,
    /// The SubjectPublicKeyInfo `openssl pkey -pubout` printed, PEM.
    pub public_pem: String,
}

#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub version: String,
    pub kind: KeyKind,
    pub public: PublicNumbers,
    pub created: u64,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct KeyObject {
    pub name: String,
    pub versions: Vec<KeyVersion>,
}

/// Key objects keyed by lowercase name.
#[derive(Debug, Default)]
pub struct KeyStore {
    keys: BTreeMap<String, KeyObject>,
}

impl KeyStore {
    pub fn get(&self, name: &str) -> Option<&KeyObject> {
        self.keys.get(&name.to_ascii_lowercase())
    }
}

/// Creates a new version of key `name` (creating the key if needed).
pub fn create(
    shared: &Shared,
    name: &str,
    kind: KeyKind,
    tags: BTreeMap<String, String>,
) -> anyhow::Result<CreatedKey> {
    let pem = openssl_public_pem(kind)?;
    let der = pem_body(&pem).context("`openssl pkey -pubout` printed no PEM")?;
    let public = parse_spki(&der, kind).context("parsing the generated public key")?;
    let version = crate::store::new_version_id();
    let v = KeyVersion {
        version: version.clone(),
        kind,
        public,
        created: unix_now(),
        tags,
    };
    let jwk = jwk_json(&shared.vault_base, name, &v);
    lock(&shared.keys)
        .keys
        .entry(name.to_ascii_lowercase())
        .or_insert_with(|| KeyObject {
            name: name.to_owned(),
            versions: Vec::new(),
        })
        .versions
        .push(v);
    Ok(CreatedKey {
        name: name.to_owned(),
        version,
        jwk,
        public_pem: pem,
    })
}

/// A fresh key's public half as SubjectPublicKeyInfo PEM (the private half
/// never leaves the openssl pipeline).
fn openssl_public_pem(kind: KeyKind) -> anyhow::Result<String> {
    let script = format!(
        "openssl genpkey {} | openssl pkey -pubout",
        kind.genpkey_args().join(" ")
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running openssl (keys need the openssl binary)")?;
    if !out.status.success() {
        anyhow::bail!(
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("openssl printed non-UTF-8 PEM")
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One DER TLV at the start of `input`: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// SPKI → the JWK numbers (RFC 5480 for EC: the BIT STRING is `04 || x || y`;
/// RFC 8017 A.1.1 for RSA: it holds `SEQUENCE { n, e }`).
fn parse_spki(der: &[u8], kind: KeyKind) -> Option<PublicNumbers> {
    let (_, spki, _) = tlv(der)?;
    let (_, _algorithm, rest) = tlv(spki)?;
    let (tag, bits, _) = tlv(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    let key = &bits[1..];
    match kind {
        KeyKind::Rsa2048 => {
            let (_, seq, _) = tlv(key)?;
            let (_, n, rest) = tlv(seq)?;
            let (_, e, _) = tlv(rest)?;
            let strip = |b: &[u8]| b[b.iter().take_while(|x| **x == 0).count()..].to_vec();
            Some(PublicNumbers::Rsa {
                n: strip(n),
                e: strip(e),
            })
        }
        _ => {
            let len = kind.coordinate_len();
            if key.len() != 1 + 2 * len || key[0] != 0x04 {
                return None;
            }
            Some(PublicNumbers::Ec {
                x: key[1..=len].to_vec(),
                y: key[1 + len..].to_vec(),
            })
        }
    }
}

fn jwk_json(base: &str, name: &str, v: &KeyVersion) -> Value {
    let (kty, crv) = v.kind.jwk_type();
    let mut key = Map::new();
    key.insert(
        "kid".into(),
        json!(format!("{base}/keys/{name}/{}", v.version)),
    );
    key.insert("kty".into(), json!(kty));
    key.insert("key_ops".into(), json!(v.kind.key_ops()));
    match &v.public {
        PublicNumbers::Rsa { n, e } => {
            key.insert("n".into(), json!(URL_SAFE_NO_PAD.encode(n)));
            key.insert("e".into(), json!(URL_SAFE_NO_PAD.encode(e)));
        }
        PublicNumbers::Ec { x, y } => {
            key.insert("crv".into(), json!(crv));
            key.insert("x".into(), json!(URL_SAFE_NO_PAD.encode(x)));
            key.insert("y".into(), json!(URL_SAFE_NO_PAD.encode(y)));
        }
    }
    Value::Object(key)
}

/// The key bundle of `GET /keys/{name}[/{version}]`.
fn bundle_json(base: &str, key: &KeyObject, v: &KeyVersion) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), jwk_json(base, &key.name, v));
    m.insert(
        "attributes".into(),
        json!({
            "enabled": true,
            "created": v.created,
            "updated": v.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
            "exportable": false,
        }),
    );
    if !v.tags.is_empty() {
        m.insert("tags".into(), json!(v.tags));
    }
    Value::Object(m)
}

/// Routes `GET /keys/{name}[/{version}]` (merged into the vault router).
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/keys/{name}", get(get_key_handler))
        .route("/keys/{name}/", get(get_key_handler))
        .route("/keys/{name}/{version}", get(get_key_handler))
        .route("/keys/{name}/{version}/", get(get_key_handler))
}

async fn get_key_handler(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, &q) {
        return resp;
    }
    shared.bump(|c| c.kv_key_gets += 1);
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    let version = params.get("version").map(String::as_str);
    let keys = lock(&shared.keys);
    let found = keys.get(name).and_then(|k| {
        let v = match version {
            Some(want) => k
                .versions
                .iter()
                .find(|v| v.version.eq_ignore_ascii_case(want)),
            None => k.versions.last(),
        };
        v.map(|v| (k, v))
    });
    let Some((key, v)) = found else {
        let what = version.map_or_else(|| name.to_owned(), |v| format!("{name}/{v}"));
        return kv_error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            &format!("A key with (name/id) {what} was not found in this key vault."),
            None,
        );
    };
    (
        StatusCode::OK,
        axum::Json(bundle_json(&shared.vault_base, key, v)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ec_and_rsa_spki_parse() {
        for kind in [KeyKind::EcP256, KeyKind::EcP521, KeyKind::Rsa2048] {
            let pem = openssl_public_pem(kind).unwrap();
            let der = pem_body(&pem).unwrap();
            match parse_spki(&der, kind).unwrap() {
                PublicNumbers::Ec { x, y } => {
                    assert_eq!(x.len(), kind.coordinate_len());
                    assert_eq!(y.len(), kind.coordinate_len());
                }
                PublicNumbers::Rsa { n, e } => {
                    assert_eq!(n.len(), 256);
                    assert_eq!(e, vec![1, 0, 1]);
                }
            }
        }
        assert!(parse_spki(b"\x30\x00", KeyKind::EcP256).is_none());
    }
}
