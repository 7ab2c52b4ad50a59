//! Key Vault certificate objects (PROTOCOL.md §6): versions issued by the
//! emulator's [`crate::issuer::IssuingCa`], each with its backing secret
//! (same name, same version id, `kid`, `managed: true`, `contentType`), and
//! the routes `GET /certificates/{name}[/{version}]`.
//!
//! Invariants: a certificate version and its secret version share the
//! version id; the newest version is the current one; rotation (issuing
//! again) makes a new key, serial and `x5t`. The certificate bundle never
//! contains the private key (that lives only in the secret).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};

use crate::faults::kv_error;
use crate::issuer::{CertContentType, CertKey, CertOptions, hex_lower, pem_block, sha1};
use crate::state::{Shared, lock, unix_now};
use crate::store::SecretOptions;
use crate::vault::authorize;

/// What [`crate::Emulator::issue_certificate`] returns: public facts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedCertificate {
    pub name: String,
    /// Version id of the certificate and of its secret (32 lowercase hex).
    pub version: String,
    /// Leaf serial, lowercase hex (`openssl x509 -serial` prints it uppercase).
    pub serial: String,
    /// `x5t`: SHA-1 of the leaf DER, base64url without padding.
    pub x5t: String,
    /// SHA-1 of the leaf DER, uppercase hex (Windows' "thumbprint").
    pub thumbprint: String,
    pub subject_cn: String,
    pub sans: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf, PEM.
    pub cert_pem: String,
    /// The issuing intermediate, PEM.
    pub chain_pem: String,
}

/// One version of a certificate object.
#[derive(Debug, Clone)]
pub struct CertVersion {
    pub version: String,
    pub cer: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub created: u64,
    pub content_type: CertContentType,
    pub key: CertKey,
    pub subject_cn: String,
    pub sans: Vec<String>,
    pub exportable: bool,
}

#[derive(Debug, Clone)]
pub struct CertObject {
    pub name: String,
    pub versions: Vec<CertVersion>,
}

/// Certificate objects keyed by lowercase name.
#[derive(Debug, Default)]
pub struct CertStore {
    certs: BTreeMap<String, CertObject>,
}

impl CertStore {
    pub fn get(&self, name: &str) -> Option<&CertObject> {
        self.certs.get(&name.to_ascii_lowercase())
    }

    fn push(&mut self, name: &str, version: CertVersion) {
        self.certs
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| CertObject {
                name: name.to_owned(),
                versions: Vec::new(),
            })
            .versions
            .push(version);
    }

    fn current_mut(&mut self, name: &str) -> Option<&mut CertVersion> {
        self.certs
            .get_mut(&name.to_ascii_lowercase())
            .and_then(|c| c.versions.last_mut())
    }
}

/// Issues a new version of certificate `name` and its backing secret.
pub fn issue(shared: &Shared, name: &str, opts: &CertOptions) -> anyhow::Result<IssuedCertificate> {
    let ca = &shared.issuing_ca;
    let issued = ca.issue(name, opts)?;
    let value = ca.secret_value(&issued, opts)?;
    let version = crate::store::new_version_id();
    let kid = format!("{}/keys/{name}/{version}", shared.vault_base);
    let secret_opts = SecretOptions {
        content_type: Some(opts.content_type.mime().to_owned()),
        expires: Some(issued.not_after),
        not_before: Some(issued.not_before),
        ..SecretOptions::default()
    };
    // Lock order: store, then certs (the only place holding both).
    let mut store = lock(&shared.store);
    store.set_managed(name, &version, &value, secret_opts, kid);
    lock(&shared.certs).push(
        name,
        CertVersion {
            version: version.clone(),
            cer: issued.leaf_der.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            created: unix_now(),
            content_type: opts.content_type,
            key: opts.key,
            subject_cn: issued.subject_cn.clone(),
            sans: issued.sans.clone(),
            exportable: opts.exportable,
        },
    );
    drop(store);
    let digest = sha1(&issued.leaf_der);
    Ok(IssuedCertificate {
        name: name.to_owned(),
        version,
        serial: issued.serial,
        x5t: URL_SAFE_NO_PAD.encode(&digest),
        thumbprint: hex_lower(&digest).to_ascii_uppercase(),
        subject_cn: issued.subject_cn,
        sans: issued.sans,
        not_before: issued.not_before,
        not_after: issued.not_after,
        cert_pem: pem_block("CERTIFICATE", &issued.leaf_der),
        chain_pem: ca.intermediate_pem(),
    })
}

/// Makes the current version of `name` (non-)exportable: its secret then
/// holds the certificates only (or again the key, if it still has it — the
/// emulator keeps no key, so `true` only flips the policy flag). Returns
/// false if there is no such certificate.
pub fn set_exportable(shared: &Shared, name: &str, exportable: bool) -> bool {
    let mut store = lock(&shared.store);
    let mut certs = lock(&shared.certs);
    let Some(current) = certs.current_mut(name) else {
        return false;
    };
    current.exportable = exportable;
    if exportable {
        return true;
    }
    let certs_only = match current.content_type {
        CertContentType::Pem => {
            let mut pem = pem_block("CERTIFICATE", &current.cer);
            pem.push_str(&shared.issuing_ca.intermediate_pem());
            pem
        }
        CertContentType::Pkcs12 => match crate::issuer::pfx_certs_only(&[
            &current.cer,
            shared.issuing_ca.intermediate_der(),
        ]) {
            Ok(der) => STANDARD.encode(der),
            Err(_) => return false,
        },
    };
    store.replace_value(name, &current.version, &certs_only)
}

/// Routes `GET /certificates/{name}[/{version}]` (merged into the vault router).
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/certificates/{name}", get(get_certificate_handler))
        .route("/certificates/{name}/", get(get_certificate_handler))
        .route(
            "/certificates/{name}/{version}",
            get(get_certificate_handler),
        )
        .route(
            "/certificates/{name}/{version}/",
            get(get_certificate_handler),
        )
}

type Q = Query<HashMap<String, String>>;

/// `GET …/{name}[/{version}][/]`: latest when the version segment is absent.
async fn get_certificate_handler(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(resp) = authorize(&shared, &headers, &q) {
        return resp;
    }
    shared.bump(|c| c.kv_cert_gets += 1);
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    cert_response(&shared, name, params.get("version").map(String::as_str))
}

fn cert_response(shared: &Shared, name: &str, version: Option<&str>) -> Response {
    let certs = lock(&shared.certs);
    let found = certs.get(name).and_then(|c| {
        let v = match version {
            Some(want) => c
                .versions
                .iter()
                .find(|v| v.version.eq_ignore_ascii_case(want)),
            None => c.versions.last(),
        };
        v.map(|v| (c, v))
    });
    let Some((cert, v)) = found else {
        let what = version.map_or_else(|| name.to_owned(), |v| format!("{name}/{v}"));
        return kv_error(
            StatusCode::NOT_FOUND,
            "CertificateNotFound",
            &format!("A certificate with (name/id) {what} was not found in this key vault."),
            None,
        );
    };
    (
        StatusCode::OK,
        axum::Json(bundle_json(&shared.vault_base, cert, v)),
    )
        .into_response()
}

/// The certificate bundle of PROTOCOL.md §6.
pub fn bundle_json(base: &str, cert: &CertObject, v: &CertVersion) -> Value {
    let name = &cert.name;
    let ver = &v.version;
    let (dns, ips): (Vec<&String>, Vec<&String>) = v
        .sans
        .iter()
        .partition(|s| s.parse::<std::net::IpAddr>().is_err());
    let key_props = match v.key {
        CertKey::Rsa2048 => {
            json!({"exportable": v.exportable, "kty": "RSA", "key_size": 2048, "reuse_key": false})
        }
        CertKey::EcP256 => {
            json!({"exportable": v.exportable, "kty": "EC", "crv": "P-256", "reuse_key": false})
        }
    };
    json!({
        "id": format!("{base}/certificates/{name}/{ver}"),
        "kid": format!("{base}/keys/{name}/{ver}"),
        "sid": format!("{base}/secrets/{name}/{ver}"),
        "x5t": URL_SAFE_NO_PAD.encode(sha1(&v.cer)),
        "cer": STANDARD.encode(&v.cer),
        "attributes": {
            "enabled": true,
            "nbf": v.not_before,
            "exp": v.not_after,
            "created": v.created,
            "updated": v.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "policy": {
            "id": format!("{base}/certificates/{name}/policy"),
            "key_props": key_props,
            "secret_props": {"contentType": v.content_type.mime()},
            "x509_props": {
                "subject": format!("CN={}", v.subject_cn),
                "sans": {"dns_names": dns, "ip_addresses": ips},
                "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
                "key_usage": ["digitalSignature", "keyEncipherment"],
                "validity_months": 12,
            },
            "issuer": {"name": "Unknown"},
            "attributes": {"enabled": true, "created": v.created, "updated": v.created},
        },
    })
}
