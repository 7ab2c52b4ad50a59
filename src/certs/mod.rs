//! Certificates (PROTOCOL.md §6): the secret behind a Key Vault certificate,
//! PKCS#12 or PEM, normalised to key, leaf, chain, full chain, PFX,
//! thumbprint, expiry, subject and SANs.
//!
//! Entry points: [`from_secret`] and [`build_pfx`]. Invariants:
//! * the leaf is the certificate whose DER equals the certificate's `cer`
//!   (or, without it, the one whose public key the private key yields), and
//!   the key is delivered only if it provably belongs to the leaf;
//! * the chain is ordered by issuer → subject, never by position, and the
//!   self-signed root is left out unless asked for;
//! * key material stays in `SecretString`/`Zeroizing` buffers and never
//!   reaches an error message or `Debug` output.
//!
//! Pure: no I/O, no clock, no logging.

mod asn1;
mod chain;
mod jwk;
mod keys;
mod pem;
mod pkcs12;
mod pkcs12_null;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jwk::{PublicKey, public_key as public_key_from_jwk};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::SectionKind;
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

/// Content type of a PFX-backed certificate secret (PROTOCOL.md §6).
pub const CONTENT_TYPE_PKCS12: &str = "application/x-pkcs12";
/// Content type of a PEM-backed certificate secret (PROTOCOL.md §6).
pub const CONTENT_TYPE_PEM: &str = "application/x-pem-file";

#[derive(Clone)]
pub struct CertMaterial {
    /// PKCS#8 PEM private key.
    pub key_pem: SecretString,
    /// Leaf certificate PEM.
    pub cert_pem: String,
    /// Intermediates PEM, issuing order (leaf's issuer first), no root
    /// (the root is appended last when `include_root` was asked for).
    pub chain_pem: String,
    /// Leaf then intermediates.
    pub fullchain_pem: String,
    /// Base64 PFX (no password).
    pub pfx_base64: SecretString,
    /// SHA-1 of the leaf DER, uppercase hex (as Windows shows it).
    pub thumbprint: String,
    /// RFC 3339.
    pub not_after: String,
    pub subject: String,
    pub sans: Vec<String>,
    /// Leaf serial, lowercase hex.
    pub serial: String,
    /// Issuer of the leaf, in the same notation as `subject`.
    pub issuer: String,
    /// `not_after` as seconds since the Unix epoch (for expiry warnings).
    pub not_after_unix: i64,
    /// "RSA 2048", "EC P-256", "EC P-384".
    pub key_algorithm: String,
    /// Leaf DER.
    pub leaf_der: Vec<u8>,
    /// DER of the certificates in `chain_pem`, same order.
    pub chain_der: Vec<Vec<u8>>,
}

impl CertMaterial {
    /// The leaf's notAfter as a `SystemTime` (the epoch for pre-1970 values).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(self.not_after_unix).unwrap_or(0))
    }
}

impl std::fmt::Debug for CertMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertMaterial")
            .field("key_pem", &"[REDACTED]")
            .field("subject", &self.subject)
            .field("thumbprint", &self.thumbprint)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

/// Why a certificate secret could not be normalised. Messages name what is
/// wrong and what to do; they never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "certificate secret has content type {0:?}; expected {CONTENT_TYPE_PKCS12:?} or {CONTENT_TYPE_PEM:?}"
    )]
    UnsupportedContentType(String),
    #[error(
        "certificate secret is not valid base64; a secret of content type {CONTENT_TYPE_PKCS12:?} (or none) must hold a base64-encoded PFX"
    )]
    InvalidBase64,
    #[error(
        "cannot open the PFX with an empty or absent password ({0}); Key Vault stores certificate PFX without a password: re-import the certificate without one"
    )]
    Pkcs12(String),
    #[error("certificate secret is not valid PEM (a block is malformed or not base64)")]
    Pem,
    #[error(
        "certificate secret holds an encrypted private key (ENCRYPTED PRIVATE KEY); import the certificate with an unencrypted PKCS#8 key"
    )]
    EncryptedKey,
    #[error(
        "the certificate's private key is not exportable: its secret holds no private key (policy key_props.exportable is false, or the key lives in an HSM); to deliver only the certificate set public_only = true on this secret (it reads GET /certificates: format = \"cert\", certs.<alias>.cert; role Key Vault Certificate User), or re-create it with an exportable key"
    )]
    NotExportable,
    #[error("certificate secret holds no certificate")]
    NoCertificate,
    #[error(
        "the certificate's leaf (cer, thumbprint {0}) is not in its secret; the secret is probably of another version than the certificate"
    )]
    LeafNotFound(String),
    #[error(
        "the private key does not belong to the leaf certificate (subject {subject}, thumbprint {thumbprint}); refusing to deliver a mismatched key and certificate"
    )]
    KeyMismatch { subject: String, thumbprint: String },
    #[error(
        "unsupported private key algorithm {0}; kvsync handles RSA and EC (P-256, P-384, and others whose key carries its public point) keys"
    )]
    UnsupportedKey(String),
    #[error("the private key is malformed: {0}")]
    InvalidKey(&'static str),
    #[error("certificate number {} in the secret is not a valid X.509 certificate", .index + 1)]
    InvalidCertificate { index: usize },
    #[error("cannot build the PFX: {0}")]
    PfxBuild(String),
}

impl CertError {
    /// Always false: these errors come from the data, which a retry of the
    /// same version does not change. The caller keeps the last good files.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Keys and certificates as found in a secret, in the secret's order.
#[derive(Default)]
pub(crate) struct Bundle {
    pub(crate) keys: Vec<keys::PrivateKey>,
    pub(crate) certs: Vec<Vec<u8>>,
}

/// Normalises a certificate's secret.
///
/// `content_type` is the secret's `contentType`; `leaf_der` the
/// certificate's `cer` (decoded), which identifies the leaf; without it the
/// leaf is the certificate the private key belongs to. `include_root` keeps
/// the self-signed root at the end of the chain.
pub fn from_secret(
    value: &SecretString,
    content_type: Option<&str>,
    leaf_der: Option<&[u8]>,
    include_root: bool,
) -> Result<CertMaterial, CertError> {
    let bundle = decode(value, content_type)?;
    if bundle.certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    if bundle.keys.is_empty() {
        return Err(CertError::NotExportable);
    }
    let certs = chain::parse_all(bundle.certs)?;
    let (leaf, key) = pick_leaf(&certs, &bundle.keys, leaf_der)?;
    let (path, root) = chain::issuing_path(&certs, leaf);
    let mut chain: Vec<&[u8]> = path.iter().map(|i| certs[*i].der.as_slice()).collect();
    if include_root {
        chain.extend(root.map(|i| certs[i].der.as_slice()));
    }
    assemble(&certs[leaf], &chain, key)
}

fn decode(value: &SecretString, content_type: Option<&str>) -> Result<Bundle, CertError> {
    // Media types are case-insensitive (RFC 9110 §8.3.1).
    let content_type = content_type.map(|t| t.trim().to_ascii_lowercase());
    match content_type.as_deref() {
        None | Some("") | Some(CONTENT_TYPE_PKCS12) => {
            let text: String = value
                .expose_secret()
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let text = Zeroizing::new(text);
            let der_bytes = Zeroizing::new(
                STANDARD
                    .decode(text.as_bytes())
                    .map_err(|_| CertError::InvalidBase64)?,
            );
            pkcs12::read(&der_bytes)
        }
        Some(CONTENT_TYPE_PEM) => pem::parse(value.expose_secret()),
        Some(other) => Err(CertError::UnsupportedContentType(other.to_owned())),
    }
}

/// Finds the leaf and the key bound to it.
fn pick_leaf(
    certs: &[chain::Cert],
    keys: &[keys::PrivateKey],
    leaf_der: Option<&[u8]>,
) -> Result<(usize, keys::BoundKey), CertError> {
    let candidates: Vec<usize> = match leaf_der {
        Some(want) => {
            let index = certs
                .iter()
                .position(|c| c.der == want)
                .ok_or_else(|| CertError::LeafNotFound(chain::thumbprint(want)))?;
            vec![index]
        }
        // Latest expiry first, so a renewed certificate with a reused key
        // wins over the old one left in the bundle.
        None => {
            let mut all: Vec<usize> = (0..certs.len()).collect();
            all.sort_by_key(|i| std::cmp::Reverse(certs[*i].not_after));
            all
        }
    };
    for &index in &candidates {
        for key in keys {
            if let Some(bound) = keys::bind(key, &certs[index].public_key)? {
                return Ok((index, bound));
            }
        }
    }
    // Report against the named leaf, or the first certificate of the secret.
    let shown = &certs[candidates.first().copied().unwrap_or(0)];
    let facts = chain::leaf_facts(shown)?;
    Err(CertError::KeyMismatch {
        subject: facts.subject,
        thumbprint: facts.thumbprint,
    })
}

fn assemble(
    leaf: &chain::Cert,
    chain: &[&[u8]],
    key: keys::BoundKey,
) -> Result<CertMaterial, CertError> {
    let facts = chain::leaf_facts(leaf)?;
    let cert_pem = pem::encode("CERTIFICATE", &leaf.der).to_string();
    let chain_pem: String = chain
        .iter()
        .map(|der| pem::encode("CERTIFICATE", der).to_string())
        .collect();
    let key_pem = pem::encode("PRIVATE KEY", &key.pkcs8);
    let mut all: Vec<&[u8]> = vec![&leaf.der];
    all.extend_from_slice(chain);
    // The PFX holds the private key: wipe it once encoded.
    let pfx = Zeroizing::new(pkcs12::write(
        &key.pkcs8,
        &all,
        &local_key_id(&leaf.der),
        None,
        false,
    )?);
    Ok(CertMaterial {
        key_pem: SecretString::from(key_pem.as_str()),
        fullchain_pem: format!("{cert_pem}{chain_pem}"),
        cert_pem,
        chain_pem,
        pfx_base64: SecretString::from(STANDARD.encode(&*pfx)),
        thumbprint: facts.thumbprint,
        not_after: facts.not_after,
        subject: facts.subject,
        sans: facts.sans,
        serial: facts.serial,
        issuer: facts.issuer,
        not_after_unix: leaf.not_after,
        key_algorithm: key.algorithm,
        leaf_der: leaf.der.clone(),
        chain_der: chain.iter().map(|d| d.to_vec()).collect(),
    })
}

/// The public facts of a certificate from its `cer` (leaf DER) alone, for
/// `public_only = true`: no private key, no chain (`GET /certificates`
/// carries only the leaf), no PFX. `key_pem`, `chain_pem` and `pfx_base64`
/// are empty; `fullchain_pem` is the leaf.
pub fn from_cer(leaf_der: &[u8]) -> Result<CertMaterial, CertError> {
    let certs = chain::parse_all(vec![leaf_der.to_vec()])?;
    let leaf = certs.first().ok_or(CertError::NoCertificate)?;
    let facts = chain::leaf_facts(leaf)?;
    let cert_pem = pem::encode("CERTIFICATE", &leaf.der).to_string();
    Ok(CertMaterial {
        key_pem: SecretString::from(""),
        fullchain_pem: cert_pem.clone(),
        cert_pem,
        chain_pem: String::new(),
        pfx_base64: SecretString::from(""),
        thumbprint: facts.thumbprint,
        not_after: facts.not_after,
        subject: facts.subject,
        sans: facts.sans,
        serial: facts.serial,
        issuer: facts.issuer,
        not_after_unix: leaf.not_after,
        key_algorithm: "(public certificate only)".to_owned(),
        leaf_der: leaf.der.clone(),
        chain_der: Vec::new(),
    })
}

/// PFX localKeyID linking key and leaf: the leaf's SHA-1, as Windows and
/// OpenSSL write it.
fn local_key_id(leaf_der: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(leaf_der).to_vec()
}

/// Writes a PFX of `material` (key, leaf, chain) for a file that wants one.
///
/// `password: None` writes the no-password form that OpenSSL reads with
/// `-passin pass:` and Windows imports with an empty password. `legacy`
/// selects 3DES/HMAC-SHA1 for Windows Server 2016 and older; otherwise
/// AES-256-CBC/PBKDF2/HMAC-SHA256 as OpenSSL 3 writes.
pub fn build_pfx(
    material: &CertMaterial,
    password: Option<&str>,
    legacy: bool,
) -> Result<Vec<u8>, CertError> {
    let key = pem::decode_first(material.key_pem.expose_secret(), SectionKind::PrivateKey)
        .ok_or(CertError::InvalidKey("key_pem holds no PRIVATE KEY block"))?;
    let mut all: Vec<&[u8]> = vec![&material.leaf_der];
    all.extend(material.chain_der.iter().map(Vec::as_slice));
    pkcs12::write(
        &key,
        &all,
        &local_key_id(&material.leaf_der),
        password,
        legacy,
    )
}
