//! The emulator's certificate authority for Key Vault certificate objects
//! (PROTOCOL.md §6): an "issuing" root CA → intermediate CA, generated at
//! start (ECDSA P-256), separate from the PKI of the HTTPS server, and the
//! leaf certificates it issues (RSA 2048 or EC P-256 keys), packaged as Key
//! Vault stores them: a no-password PFX or PEM text.
//!
//! Invariants: every leaf is signed by the intermediate, which is signed by
//! the root; serials are random positive 128-bit numbers; PFX are written
//! with NO password; PEM blocks use `\n` line endings. RSA keys come from the
//! `openssl` binary (ring cannot generate RSA keys; EC keys are in-process).
//! Keys never leave the emulator except inside a certificate's secret.

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rand::RngCore as _;
use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject as _;
use sha1::Digest as _;

use crate::tls::ca_params;

/// Content type of a certificate's secret (PROTOCOL.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertContentType {
    /// `application/x-pkcs12`: base64 of a no-password PFX.
    #[default]
    Pkcs12,
    /// `application/x-pem-file`: PEM key and certificates.
    Pem,
}

impl CertContentType {
    pub fn mime(self) -> &'static str {
        match self {
            CertContentType::Pkcs12 => "application/x-pkcs12",
            CertContentType::Pem => "application/x-pem-file",
        }
    }
}

/// Key type of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertKey {
    #[default]
    Rsa2048,
    EcP256,
}

/// RSA modulus size of [`CertKey::Rsa2048`] (Key Vault's default policy).
const RSA_BITS: u32 = 2048;

/// Default validity: 12 months, Key Vault's default `validity_months`.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far `notBefore` is backdated, so a verifier whose clock is slightly
/// behind still accepts a just-issued certificate.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Options of [`crate::Emulator::issue_certificate`].
#[derive(Debug, Clone)]
pub struct CertOptions {
    pub content_type: CertContentType,
    pub key: CertKey,
    /// Common name; `None` = the certificate's name.
    pub subject_cn: Option<String>,
    /// DNS names / IP addresses; `None` = `localhost`, `127.0.0.1`.
    pub sans: Option<Vec<String>>,
    pub validity: Duration,
    /// Store the secret's blocks (PEM) or bags (PFX) root first and the key
    /// after a certificate, as imported certificates sometimes are.
    pub pem_order_scrambled: bool,
    /// `false`: the secret holds no private key (policy `exportable:false`).
    pub exportable: bool,
}

impl Default for CertOptions {
    fn default() -> Self {
        Self {
            content_type: CertContentType::Pkcs12,
            key: CertKey::Rsa2048,
            subject_cn: None,
            sans: None,
            validity: DEFAULT_VALIDITY,
            pem_order_scrambled: false,
            exportable: true,
        }
    }
}

/// Default SANs of issued certificates.
pub const DEFAULT_SANS: &[&str] = &["localhost", "127.0.0.1"];

/// The issuing CA chain.
pub struct IssuingCa {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa").finish_non_exhaustive()
    }
}

/// A freshly issued leaf with its key (kept only to build the secret).
pub struct Issued {
    pub key_pkcs8: Vec<u8>,
    pub leaf_der: Vec<u8>,
    /// Lowercase hex, as `openssl x509 -serial` prints it (uppercased there).
    pub serial: String,
    pub subject_cn: String,
    pub sans: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl IssuingCa {
    pub fn generate() -> anyhow::Result<Self> {
        let root = CertifiedIssuer::self_signed(
            ca_params("kvsync-fake issuing root CA", None)?,
            KeyPair::generate().context("generating the issuing root key")?,
        )
        .context("signing the issuing root CA")?;
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("kvsync-fake issuing intermediate CA", Some(0))?,
            KeyPair::generate().context("generating the issuing intermediate key")?,
            &root,
        )
        .context("signing the issuing intermediate CA")?;
        Ok(Self { root, intermediate })
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    pub fn intermediate_pem(&self) -> String {
        self.intermediate.pem()
    }

    pub fn root_der(&self) -> &[u8] {
        self.root.der()
    }

    pub fn intermediate_der(&self) -> &[u8] {
        self.intermediate.der()
    }

    /// Issues a leaf for `name` (the default common name).
    pub fn issue(&self, name: &str, opts: &CertOptions) -> anyhow::Result<Issued> {
        let sans: Vec<String> = opts
            .sans
            .clone()
            .unwrap_or_else(|| DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect());
        let cn = opts.subject_cn.clone().unwrap_or_else(|| name.to_owned());
        let mut params = CertificateParams::new(sans.clone()).context("certificate SANs")?;
        params.distinguished_name.push(DnType::CommonName, &cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = crate::state::unix_now();
        let not_before = secs_i64(now) - secs_i64(BACKDATE.as_secs());
        let not_after = secs_i64(now) + secs_i64(opts.validity.as_secs());
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before)?;
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after)?;
        let key = generate_key(opts.key)?;
        let leaf = params
            .signed_by(&key, &self.intermediate)
            .context("signing the leaf certificate")?;
        Ok(Issued {
            key_pkcs8: key.serialize_der(),
            leaf_der: leaf.der().to_vec(),
            serial: hex_lower(&serial),
            subject_cn: cn,
            sans,
            not_before,
            not_after,
        })
    }

    /// The secret value Key Vault would store for `issued`.
    pub fn secret_value(&self, issued: &Issued, opts: &CertOptions) -> anyhow::Result<String> {
        let (leaf, inter, root) = (
            issued.leaf_der.as_slice(),
            self.intermediate_der(),
            self.root_der(),
        );
        let key = opts.exportable.then_some(issued.key_pkcs8.as_slice());
        match (opts.content_type, opts.pem_order_scrambled) {
            (CertContentType::Pem, false) => Ok(pem_bundle(key, &[leaf, inter, root], false)),
            // Root first, the key after it, the leaf last.
            (CertContentType::Pem, true) => Ok(pem_bundle(key, &[root, inter, leaf], true)),
            // The key bag's localKeyId goes with the first certificate, so
            // the leaf stays first; the chain is out of order.
            (CertContentType::Pkcs12, false) => {
                Ok(STANDARD.encode(pfx(key, &[leaf, inter, root], leaf)?))
            }
            (CertContentType::Pkcs12, true) => {
                Ok(STANDARD.encode(pfx(key, &[leaf, root, inter], leaf)?))
            }
        }
    }
}

fn secs_i64(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 2)
}

/// 16 random bytes, first byte in 0x01..=0x7f: positive, no leading zero,
/// so the DER INTEGER is exactly these bytes (RFC 5280 §4.1.2.2: <= 20 octets).
fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-1 of a certificate's DER.
pub fn sha1(der: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(der).to_vec()
}

fn generate_key(kind: CertKey) -> anyhow::Result<KeyPair> {
    match kind {
        CertKey::EcP256 => KeyPair::generate().context("generating an EC P-256 key"),
        CertKey::Rsa2048 => {
            let der = openssl_rsa_pkcs8()?;
            KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(der.as_slice()),
                &rcgen::PKCS_RSA_SHA256,
            )
            .context("loading the generated RSA key")
        }
    }
}

/// An RSA key as PKCS#8 DER from `openssl genpkey`.
fn openssl_rsa_pkcs8() -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{RSA_BITS}"))
        .stdin(std::process::Stdio::null())
        .output()
        .context("running `openssl genpkey` (RSA certificates need the openssl binary)")?;
    if !out.status.success() {
        anyhow::bail!(
            "`openssl genpkey` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // PEM output is PKCS#8 (`-outform DER` would be PKCS#1 on OpenSSL 3).
    let der = PrivatePkcs8KeyDer::from_pem_slice(&out.stdout)
        .map_err(|_| anyhow::anyhow!("`openssl genpkey` printed no PKCS#8 PEM key"))?;
    Ok(der.secret_pkcs8_der().to_vec())
}

/// PEM armour with 64-column lines and `\n` endings.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Key then certificates, or (scrambled) the key after the first certificate.
fn pem_bundle(key: Option<&[u8]>, certs: &[&[u8]], scrambled: bool) -> String {
    let mut blocks: Vec<String> = certs.iter().map(|d| pem_block("CERTIFICATE", d)).collect();
    if let Some(key) = key {
        let at = if scrambled { 1.min(blocks.len()) } else { 0 };
        blocks.insert(at, pem_block("PRIVATE KEY", key));
    }
    blocks.concat()
}

/// A PFX with NO password (the empty BMPString encoding, as OpenSSL's
/// `-passout pass:`): the key bound to the leaf plus every certificate, or
/// only the certificates when `key` is `None` (non-exportable).
fn pfx(key: Option<&[u8]>, certs: &[&[u8]], leaf: &[u8]) -> anyhow::Result<Vec<u8>> {
    let parsed = certs
        .iter()
        .map(|d| Certificate::from_der(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("PFX certificate: {e}"))?;
    let mut store = KeyStore::new();
    match key {
        Some(key) => {
            let key = PrivateKey::from_der(key).map_err(|e| anyhow::anyhow!("PFX key: {e}"))?;
            let chain = PrivateKeyChain::new(sha1(leaf), key, parsed);
            store.add_entry("kvsync-fake", KeyStoreEntry::PrivateKeyChain(chain));
        }
        None => {
            for (i, cert) in parsed.into_iter().enumerate() {
                store.add_entry(&format!("cert{i}"), KeyStoreEntry::Certificate(cert));
            }
        }
    }
    store
        .writer("")
        .write()
        .map_err(|e| anyhow::anyhow!("writing the PFX: {e}"))
}

/// A no-password PFX holding certificates only (a non-exportable key).
pub fn pfx_certs_only(certs: &[&[u8]]) -> anyhow::Result<Vec<u8>> {
    pfx(None, certs, &[])
}
