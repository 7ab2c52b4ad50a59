//! Certificates (PROTOCOL.md §6): the secret behind a Key Vault certificate,
//! PKCS#12 or PEM, normalised to key, leaf, chain, full chain, PFX,
//! thumbprint, expiry, subject and SANs. Pure: no I/O.

use secrecy::SecretString;

#[derive(Clone)]
pub struct CertMaterial {
    /// PKCS#8 PEM private key.
    pub key_pem: SecretString,
    /// Leaf certificate PEM.
    pub cert_pem: String,
    /// Intermediates PEM, issuing order (leaf's issuer first), no root.
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
}

impl std::fmt::Debug for CertMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertMaterial")
            .field("key_pem", &"[REDACTED]")
            .field("subject", &self.subject)
            .field("thumbprint", &self.thumbprint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}
