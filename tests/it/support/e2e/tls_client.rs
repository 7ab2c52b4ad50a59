//! A TLS client that trusts ONLY the given root CA (no OS store), verifies
//! the server's chain and name (`localhost`), sends one HTTP/1.0 request and
//! returns the leaf's serial number.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Handshake + one request must finish within this (loopback).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one connection saw.
#[derive(Debug)]
pub struct Served {
    /// Leaf serial, lowercase hex without leading zeros.
    pub serial: String,
    /// The HTTP status line of the answer.
    pub status_line: String,
}

/// Serial as lowercase hex without leading zeros (DER may carry a leading
/// 0x00 to keep the number positive; printers differ on it).
pub fn normalize_serial(hex: &str) -> String {
    let s = hex.replace(':', "").to_ascii_lowercase();
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0".to_owned()
    } else {
        t.to_owned()
    }
}

fn config(root_pem: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| format!("root PEM: {e}"))?)
            .map_err(|e| format!("root cert: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no root certificate in the given PEM".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Connect to 127.0.0.1:`port` as `localhost`, verify against `root_pem`
/// only, `GET /`. Any failure (refused, handshake, verification) is an Err
/// so callers can retry while a server starts or reloads.
pub async fn fetch(port: u16, root_pem: &str) -> Result<Served, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config(root_pem)?));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no peer certificate")?
            .clone();
        let (_, x509) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| format!("peer certificate: {e}"))?;
        let serial = normalize_serial(&hex::encode(x509.tbs_certificate.raw_serial()));
        tls.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        // nginx closes after an HTTP/1.0 answer; it may skip close_notify.
        let _ = tls.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        let status_line = text.lines().next().unwrap_or_default().to_owned();
        Ok(Served {
            serial,
            status_line,
        })
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {EXCHANGE_TIMEOUT:?}"))?
}
