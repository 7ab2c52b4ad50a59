//! Certificate objects of the emulator (PROTOCOL.md §6): issue, serve,
//! rotate, non-exportable; verified with the openssl binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kvsync_fake::{CertContentType, CertKey, CertOptions, Emulator, Options};
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

const API: &str = "2025-07-01";
const KV: &str = "https://vault.azure.net";

fn https(emu: &Emulator) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get(emu: &Emulator, path: &str) -> (StatusCode, Value) {
    let token = emu.issue_token(KV);
    let resp = https(emu)
        .get(format!("{}{path}", emu.vault_url()))
        .query(&[("api-version", API)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

fn openssl(args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn pem_ec_certificate_bundle_secret_and_rotation() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let opts = CertOptions {
        content_type: CertContentType::Pem,
        key: CertKey::EcP256,
        ..CertOptions::default()
    };
    let first = emu.issue_certificate("web", opts.clone()).unwrap();
    assert_eq!(first.version.len(), 32);
    assert_eq!(first.subject_cn, "web");

    let (status, cert) = get(&emu, "/certificates/web/").await;
    assert_eq!(status, StatusCode::OK);
    let base = emu.vault_url();
    let v = &first.version;
    assert_eq!(cert["id"], format!("{base}/certificates/web/{v}"));
    assert_eq!(cert["sid"], format!("{base}/secrets/web/{v}"));
    assert_eq!(cert["kid"], format!("{base}/keys/web/{v}"));
    assert_eq!(cert["x5t"], first.x5t.as_str());
    assert_eq!(cert["attributes"]["exp"], first.not_after);
    assert_eq!(cert["policy"]["key_props"]["kty"], "EC");
    assert_eq!(
        cert["policy"]["secret_props"]["contentType"],
        "application/x-pem-file"
    );
    let cer = STANDARD.decode(cert["cer"].as_str().unwrap()).unwrap();
    use sha1::Digest as _;
    assert_eq!(URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&cer)), first.x5t);

    // The backing secret: same version, managed, kid, PEM with the key.
    let (status, secret) = get(&emu, "/secrets/web").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(secret["id"], format!("{base}/secrets/web/{v}"));
    assert_eq!(secret["managed"], true);
    assert_eq!(secret["kid"], format!("{base}/keys/web/{v}"));
    assert_eq!(secret["contentType"], "application/x-pem-file");
    let value = secret["value"].as_str().unwrap();
    assert!(value.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(value.matches("BEGIN CERTIFICATE").count(), 3);

    // openssl: serial, and the chain verifies against the issuing root.
    let serial = openssl(&["x509", "-noout", "-serial"], first.cert_pem.as_bytes());
    assert_eq!(
        serial.trim(),
        format!("serial={}", first.serial.to_uppercase())
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    let inter = dir.path().join("inter.pem");
    std::fs::write(&root, emu.cert_root_pem()).unwrap();
    std::fs::write(&inter, &first.chain_pem).unwrap();
    let verified = openssl(
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            inter.to_str().unwrap(),
        ],
        first.cert_pem.as_bytes(),
    );
    assert!(verified.contains("OK"), "{verified}");

    // Rotation: new version, serial and x5t; the old version stays readable.
    let second = emu.issue_certificate("web", opts).unwrap();
    assert_ne!(second.version, first.version);
    assert_ne!(second.serial, first.serial);
    assert_ne!(second.x5t, first.x5t);
    let (_, latest) = get(&emu, "/certificates/web").await;
    assert_eq!(latest["x5t"], second.x5t.as_str());
    let (status, old) = get(&emu, &format!("/certificates/web/{}", first.version)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["x5t"], first.x5t.as_str());
    assert_eq!(emu.counters().kv_cert_gets, 3);

    let (status, missing) = get(&emu, "/certificates/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "CertificateNotFound");
}

#[tokio::test]
async fn pfx_rsa_has_no_password_and_non_exportable_drops_the_key() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let issued = emu
        .issue_certificate(
            "api",
            CertOptions {
                validity: Duration::from_secs(2 * 24 * 3600),
                sans: Some(vec!["api.example.test".into()]),
                ..CertOptions::default()
            },
        )
        .unwrap();
    let (_, secret) = get(&emu, "/secrets/api").await;
    assert_eq!(secret["contentType"], "application/x-pkcs12");
    let pfx = STANDARD.decode(secret["value"].as_str().unwrap()).unwrap();
    let text = openssl(&["pkcs12", "-passin", "pass:", "-nodes"], &pfx);
    assert!(text.contains("BEGIN PRIVATE KEY"));
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 3);
    let leaf = openssl(&["x509", "-noout", "-text"], issued.cert_pem.as_bytes());
    assert!(
        leaf.contains("rsaEncryption") && leaf.contains("2048 bit"),
        "{leaf}"
    );
    assert!(leaf.contains("DNS:api.example.test"));
    let two_days = 2 * 24 * 3600;
    assert!((issued.not_after - issued.not_before - two_days - 3600).abs() <= 1);

    assert!(emu.set_certificate_exportable("api", false));
    let (_, cert) = get(&emu, "/certificates/api").await;
    assert_eq!(cert["policy"]["key_props"]["exportable"], false);
    let (_, secret) = get(&emu, "/secrets/api").await;
    let pfx = STANDARD.decode(secret["value"].as_str().unwrap()).unwrap();
    let text = openssl(&["pkcs12", "-passin", "pass:", "-nodes"], &pfx);
    assert!(!text.contains("PRIVATE KEY"));
    assert!(text.contains("BEGIN CERTIFICATE"));
    assert!(!emu.set_certificate_exportable("nope", false));
}
