//! Test PKI for the Key Vault HTTPS server: a root CA, an intermediate CA and
//! a server certificate for `localhost` and `127.0.0.1`, all generated at
//! start (ECDSA P-256), and the rustls server configuration offering HTTP/2
//! and HTTP/1.1 by ALPN.
//!
//! Invariants: the server sends leaf + intermediate (never the root), so a
//! client must trust the root from [`TestPki::ca_pem`] and build the chain —
//! as with a real vault. Keys never leave this process.

use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Subject alternative names of the server certificate.
const SERVER_SANS: &[&str] = &["localhost", "127.0.0.1"];

/// The generated PKI.
pub struct TestPki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn ca_params(
    common_name: &str,
    path_len: Option<u8>,
) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "kvsync-fake");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl TestPki {
    /// Generates root → intermediate → server certificate.
    pub fn generate() -> anyhow::Result<Self> {
        let root = CertifiedIssuer::self_signed(
            ca_params("kvsync-fake test root CA", None)?,
            KeyPair::generate().context("generating the root CA key")?,
        )
        .context("signing the root CA")?;
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("kvsync-fake test intermediate CA", Some(0))?,
            KeyPair::generate().context("generating the intermediate CA key")?,
            &root,
        )
        .context("signing the intermediate CA")?;

        let mut params = CertificateParams::new(
            SERVER_SANS
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().context("generating the server key")?;
        let server = params
            .signed_by(&server_key, &intermediate)
            .context("signing the server certificate")?;

        Ok(Self {
            ca_pem: root.pem(),
            chain: vec![server.der().clone(), intermediate.der().clone()],
            key_der: server_key.serialize_der(),
        })
    }

    /// The root CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// rustls server config: the chain above, ALPN `h2` then `http/1.1`.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .context("TLS server certificate")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
