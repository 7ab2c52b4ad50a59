//! HTTP clients. Two kinds, built once and shared (connection reuse):
//!
//! * [`metadata_client`]: plain HTTP to HIMDS/IMDS on the host. Never uses a
//!   proxy (PROTOCOL.md §2: "Never send through a proxy").
//! * [`vault_client`]: HTTPS only (rustls, ring), trusting the OS store,
//!   `SSL_CERT_FILE` and `[tls] ca_file`; honours `HTTPS_PROXY`/`NO_PROXY`.

use std::path::Path;
use std::time::Duration;

use crate::env::Env;

/// Connect timeout for the local metadata endpoints (they are on the host).
pub const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-request timeout for metadata endpoints.
pub const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for Key Vault and the login endpoint.
pub const REMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-request timeout for Key Vault and the login endpoint.
pub const REMOTE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no PEM certificate")]
    CaFileEmpty { path: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("HTTP client setup failed: {0}")]
    Client(#[from] reqwest::Error),
}

pub fn metadata_client() -> Result<reqwest::Client, HttpSetupError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(METADATA_CONNECT_TIMEOUT)
        .timeout(METADATA_REQUEST_TIMEOUT)
        .build()?)
}

/// HTTPS client for Key Vault and Entra.
pub fn vault_client(env: &Env, ca_file: Option<&Path>) -> Result<reqwest::Client, HttpSetupError> {
    let tls = tls_config(env, ca_file)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(REMOTE_CONNECT_TIMEOUT)
        .timeout(REMOTE_REQUEST_TIMEOUT)
        .build()?)
}

fn tls_config(env: &Env, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, HttpSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    // The OS store. rustls-native-certs itself would let SSL_CERT_FILE
    // *replace* the OS store; we want OS store *plus* SSL_CERT_FILE.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = env.var("SSL_CERT_FILE") {
        add_pem_file(&mut roots, Path::new(path))?;
    }
    if let Some(path) = ca_file {
        add_pem_file(&mut roots, path)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), HttpSetupError> {
    use rustls_pki_types::pem::PemObject;
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| HttpSetupError::CaFile {
        path: shown.clone(),
        source,
    })?;
    let mut added = 0;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&bytes).flatten() {
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    if added == 0 {
        return Err(HttpSetupError::CaFileEmpty { path: shown });
    }
    Ok(())
}
