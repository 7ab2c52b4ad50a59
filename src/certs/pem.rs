//! PEM in and out (RFC 7468). Reading accepts the blocks of a Key Vault PEM
//! secret in any order; writing produces `\n` line endings and 64-column
//! base64, as OpenSSL does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::{PemObject, SectionKind};
use zeroize::Zeroizing;

use super::{Bundle, CertError, keys};

/// Base64 characters per PEM line (RFC 7468 §2: "exactly 64 characters").
const PEM_LINE: usize = 64;

/// Label of an encrypted PKCS#8 key (RFC 7468 §11), which kvsync cannot open.
const ENCRYPTED_KEY_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

/// Splits a PEM secret into private keys and certificates.
pub(crate) fn parse(text: &str) -> Result<Bundle, CertError> {
    if text.contains(ENCRYPTED_KEY_LABEL) {
        return Err(CertError::EncryptedKey);
    }
    let mut bundle = Bundle::default();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes()) {
        // The parser's error text may quote the input; keep it out.
        let (kind, der_bytes) = section.map_err(|_| CertError::Pem)?;
        let der_bytes = Zeroizing::new(der_bytes);
        match kind {
            SectionKind::Certificate => bundle.certs.push(der_bytes.to_vec()),
            SectionKind::PrivateKey => bundle.keys.push(keys::from_pkcs8(&der_bytes)?),
            SectionKind::RsaPrivateKey => bundle.keys.push(keys::from_pkcs1(&der_bytes)?),
            SectionKind::EcPrivateKey => bundle.keys.push(keys::from_sec1(&der_bytes)?),
            // CRLs, CSRs, public keys: not part of a certificate bundle.
            _ => {}
        }
    }
    Ok(bundle)
}

/// One PEM block with the given label.
pub(crate) fn encode(label: &str, der_bytes: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der_bytes));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / PEM_LINE + 64));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(PEM_LINE) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// The DER of the first `label` block in `text`.
pub(crate) fn decode_first(text: &str, want: SectionKind) -> Option<Zeroizing<Vec<u8>>> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .find(|(kind, _)| *kind == want)
        .map(|(_, der_bytes)| Zeroizing::new(der_bytes))
}
