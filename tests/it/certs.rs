//! Certificate normalisation (src/certs): PEM in any order, PFX with both
//! encodings of "no password", chain order, key match, and PFX output that
//! OpenSSL 3 reads. Fixtures: tests/fixtures/certs/README.md.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kvsync::certs::{self, CONTENT_TYPE_PEM, CONTENT_TYPE_PKCS12, CertError, CertMaterial};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use secrecy::{ExposeSecret as _, SecretString};
use sha1::{Digest as _, Sha1};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/certs");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn pem_der(text: &str) -> Vec<u8> {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

struct Chain {
    root: Vec<u8>,
    int: Vec<u8>,
    leaf: Vec<u8>,
    /// PKCS#8 PEM of the leaf key.
    key: String,
}

fn params(cn: &str, ca: bool) -> CertificateParams {
    let mut p = CertificateParams::new(if ca {
        vec![]
    } else {
        vec!["leaf.example.test".to_owned(), "127.0.0.1".to_owned()]
    })
    .unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    }
    p
}

/// root → intermediate → leaf, signed by rcgen.
fn chain(root_key: KeyPair, int_key: KeyPair, leaf_key: KeyPair) -> Chain {
    let root = CertifiedIssuer::self_signed(params("Test Root", true), root_key).unwrap();
    let int =
        CertifiedIssuer::signed_by(params("Test Intermediate", true), int_key, &root).unwrap();
    let leaf = params("leaf.example.test", false)
        .signed_by(&leaf_key, &int)
        .unwrap();
    Chain {
        root: root.der().to_vec(),
        int: int.der().to_vec(),
        leaf: leaf.der().to_vec(),
        key: leaf_key.serialize_pem(),
    }
}

fn rsa_chain() -> Chain {
    let key = |n: &str| KeyPair::from_pem(&fixture_text(&format!("rsa-{n}.key"))).unwrap();
    chain(key("root"), key("int"), key("leaf"))
}

fn ec_chain(alg: &'static rcgen::SignatureAlgorithm) -> Chain {
    let key = || KeyPair::generate_for(alg).unwrap();
    chain(key(), key(), key())
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

/// Key last, root first, chain reversed (PROTOCOL.md §6: order not guaranteed).
fn scrambled_pem(c: &Chain, key_pem: &str) -> String {
    [
        pem("CERTIFICATE", &c.root),
        pem("CERTIFICATE", &c.int),
        pem("CERTIFICATE", &c.leaf),
        key_pem.to_owned(),
    ]
    .concat()
}

fn sha1_upper(der: &[u8]) -> String {
    hex::encode_upper(Sha1::digest(der))
}

fn assert_leaf_and_chain(m: &CertMaterial, c: &Chain) {
    assert_eq!(m.leaf_der, c.leaf);
    assert_eq!(m.cert_pem, pem("CERTIFICATE", &c.leaf));
    assert_eq!(
        m.chain_der,
        vec![c.int.clone()],
        "intermediate only, root dropped"
    );
    assert_eq!(m.chain_pem, pem("CERTIFICATE", &c.int));
    assert_eq!(m.fullchain_pem, format!("{}{}", m.cert_pem, m.chain_pem));
    assert_eq!(m.thumbprint, sha1_upper(&c.leaf));
    assert_eq!(m.sans, vec!["leaf.example.test", "127.0.0.1"]);
    assert_eq!(m.subject, "CN=leaf.example.test");
    assert_eq!(m.issuer, "CN=Test Intermediate");
}

#[test]
fn pem_scrambled_rsa_with_cer() {
    let c = rsa_chain();
    let m = certs::from_secret(
        &secret(&scrambled_pem(&c, &c.key)),
        Some(CONTENT_TYPE_PEM),
        Some(&c.leaf),
        false,
    )
    .unwrap();
    assert_leaf_and_chain(&m, &c);
    assert_eq!(m.key_algorithm, "RSA 2048");
    // The key was already canonical PKCS#8: it comes out unchanged.
    assert_eq!(m.key_pem.expose_secret(), c.key);
}

#[test]
fn pem_scrambled_ec_without_cer_finds_leaf_by_key() {
    for (alg, name) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "EC P-256"),
        (&rcgen::PKCS_ECDSA_P384_SHA384, "EC P-384"),
    ] {
        let c = ec_chain(alg);
        let m = certs::from_secret(
            &secret(&scrambled_pem(&c, &c.key)),
            Some(CONTENT_TYPE_PEM),
            None,
            false,
        )
        .unwrap();
        assert_leaf_and_chain(&m, &c);
        assert_eq!(m.key_algorithm, name);
    }
}

#[test]
fn include_root_appends_the_root_last() {
    let c = ec_chain(&rcgen::PKCS_ECDSA_P256_SHA256);
    let m = certs::from_secret(
        &secret(&scrambled_pem(&c, &c.key)),
        Some(CONTENT_TYPE_PEM),
        Some(&c.leaf),
        true,
    )
    .unwrap();
    assert_eq!(m.chain_der, vec![c.int.clone(), c.root.clone()]);
    assert!(m.fullchain_pem.ends_with(&pem("CERTIFICATE", &c.root)));
}

#[test]
fn foreign_key_is_refused() {
    let c = rsa_chain();
    let other = fixture_text("rsa-other.key");
    let err = certs::from_secret(
        &secret(&scrambled_pem(&c, &other)),
        Some(CONTENT_TYPE_PEM),
        Some(&c.leaf),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&sha1_upper(&c.leaf)), "{msg}");
    // No fragment of either key in the message.
    for key in [&other, &c.key] {
        let body: String = key.lines().nth(1).unwrap().chars().take(24).collect();
        assert!(!msg.contains(&body));
    }

    // EC: another P-256 key, and an RSA key for an EC leaf.
    let c = ec_chain(&rcgen::PKCS_ECDSA_P256_SHA256);
    let stranger = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    for key in [stranger, other] {
        let err = certs::from_secret(
            &secret(&scrambled_pem(&c, &key)),
            Some(CONTENT_TYPE_PEM),
            None,
            false,
        )
        .unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    }
}

#[test]
fn missing_key_says_not_exportable() {
    let c = rsa_chain();
    let text = [pem("CERTIFICATE", &c.leaf), pem("CERTIFICATE", &c.int)].concat();
    let err = certs::from_secret(&secret(&text), Some(CONTENT_TYPE_PEM), Some(&c.leaf), false)
        .unwrap_err();
    assert!(matches!(err, CertError::NotExportable));
    assert!(err.to_string().contains("not exportable"), "{err}");
}

#[test]
fn leaf_not_in_secret_is_reported() {
    let c = rsa_chain();
    let other = ec_chain(&rcgen::PKCS_ECDSA_P256_SHA256);
    let err = certs::from_secret(
        &secret(&scrambled_pem(&c, &c.key)),
        Some(CONTENT_TYPE_PEM),
        Some(&other.leaf),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::LeafNotFound(ref t) if *t == sha1_upper(&other.leaf)));
}

#[test]
fn traditional_keys_become_pkcs8() {
    let c = rsa_chain();
    let pkcs1 = fixture_text("rsa-leaf.pkcs1.key");
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let m = certs::from_secret(
        &secret(&scrambled_pem(&c, &pkcs1)),
        Some(CONTENT_TYPE_PEM),
        Some(&c.leaf),
        false,
    )
    .unwrap();
    assert_eq!(m.key_pem.expose_secret(), c.key);

    // SEC1 with and without the public point; rcgen signs with the PKCS#8 form.
    let leaf_key = KeyPair::from_pem(&fixture_text("ec-leaf.key")).unwrap();
    let p256 = || KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let c = chain(p256(), p256(), leaf_key);
    let mut seen = Vec::new();
    for name in ["ec-leaf.key", "ec-leaf.sec1.key", "ec-leaf.sec1-nopub.key"] {
        let key = fixture_text(name);
        let m = certs::from_secret(
            &secret(&scrambled_pem(&c, &key)),
            Some(CONTENT_TYPE_PEM),
            None,
            false,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            m.key_pem
                .expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        seen.push(m.key_pem.expose_secret().to_owned());
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "one canonical PKCS#8"
    );
}

#[test]
fn encrypted_pem_key_is_explained() {
    let text = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let err = certs::from_secret(&secret(text), Some(CONTENT_TYPE_PEM), None, false).unwrap_err();
    assert!(matches!(err, CertError::EncryptedKey));
}

#[test]
fn bad_inputs_are_named() {
    let err = certs::from_secret(&secret("x"), Some("text/plain"), None, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate secret has content type \"text/plain\"; expected \"application/x-pkcs12\" or \"application/x-pem-file\""
    );
    let err = certs::from_secret(&secret("not base64!"), None, None, false).unwrap_err();
    assert!(matches!(err, CertError::InvalidBase64));
    let err = certs::from_secret(&secret("aGVsbG8="), Some(CONTENT_TYPE_PKCS12), None, false)
        .unwrap_err();
    assert!(matches!(err, CertError::Pkcs12(_)), "{err}");
}

/// The OpenSSL-made PFX fixtures: both encodings of "no password", AES and
/// 3DES, and one without MAC or encryption. Root first in every file.
#[test]
fn pfx_fixtures_all_encodings() {
    let leaf = pem_der(&fixture_text("leaf.pem"));
    let int = pem_der(&fixture_text("int.pem"));
    let openssl_sha1 = fixture_text("leaf.sha1").trim().to_owned();
    for name in [
        "empty-aes.pfx",
        "empty-3des.pfx",
        "null-aes.pfx",
        "null-3des.pfx",
        "plain-nomac.pfx",
    ] {
        let b64 = STANDARD.encode(fixture(name));
        for (content_type, cer) in [(None, None), (Some(CONTENT_TYPE_PKCS12), Some(&leaf[..]))] {
            let m = certs::from_secret(&secret(&b64), content_type, cer, false)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.leaf_der, leaf, "{name}");
            assert_eq!(m.chain_der, vec![int.clone()], "{name}");
            assert_eq!(m.thumbprint, openssl_sha1, "{name}");
            assert_eq!(m.serial, "a1b2c3");
            assert_eq!(m.sans, vec!["pfx.example.test", "127.0.0.1"]);
            assert_eq!(m.subject, "O=kvsync, CN=pfx.example.test");
            assert_eq!(m.key_pem.expose_secret(), fixture_text("rsa-leaf.key"));
            assert!(m.expires_at() > std::time::SystemTime::now());
            assert!(m.not_after.ends_with('Z') && m.not_after.len() == 20);
        }
    }
}

/// The gap the fallback reader closes (TOOLING.md): p12-keystore alone cannot
/// open a null-password PFX.
#[test]
fn null_password_pfx_needs_the_fallback() {
    for name in ["null-aes.pfx", "null-3des.pfx"] {
        assert!(p12_keystore::Pkcs12Archive::from_pkcs12(&fixture(name), "").is_err());
    }
    assert!(p12_keystore::Pkcs12Archive::from_pkcs12(&fixture("empty-aes.pfx"), "").is_ok());
}

/// Runs `openssl pkcs12 -nodes` on `pfx`, returning its PEM output.
fn openssl_read_pfx(pfx: &[u8], pass: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["pkcs12", "-nodes", "-passin", &format!("pass:{pass}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl CLI (OpenSSL 3) is needed for this test");
    child.stdin.take().unwrap().write_all(pfx).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl pkcs12 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn written_pfx_is_read_by_openssl() {
    let c = rsa_chain();
    let m = certs::from_secret(
        &secret(&scrambled_pem(&c, &c.key)),
        Some(CONTENT_TYPE_PEM),
        Some(&c.leaf),
        false,
    )
    .unwrap();
    let default_pfx = STANDARD.decode(m.pfx_base64.expose_secret()).unwrap();
    let cases = [
        (default_pfx, ""),
        (certs::build_pfx(&m, None, true).unwrap(), ""),
        (
            certs::build_pfx(&m, Some("s3cret"), false).unwrap(),
            "s3cret",
        ),
        (
            certs::build_pfx(&m, Some("s3cret"), true).unwrap(),
            "s3cret",
        ),
    ];
    for (pfx, pass) in cases {
        let text = openssl_read_pfx(&pfx, pass);
        // OpenSSL's output (bag attributes and all) goes back through the
        // PEM path: same leaf, same key, same chain.
        let again =
            certs::from_secret(&secret(&text), Some(CONTENT_TYPE_PEM), Some(&c.leaf), false)
                .unwrap();
        assert_eq!(again.leaf_der, c.leaf);
        assert_eq!(again.chain_der, vec![c.int.clone()]);
        assert_eq!(again.key_pem.expose_secret(), m.key_pem.expose_secret());
        if pass.is_empty() {
            // And our own reader opens it.
            let b64 = STANDARD.encode(&pfx);
            let back = certs::from_secret(&secret(&b64), None, None, false).unwrap();
            assert_eq!(back.thumbprint, m.thumbprint);
            assert_eq!(back.key_pem.expose_secret(), m.key_pem.expose_secret());
        }
    }
}

#[test]
fn thumbprint_matches_openssl_fingerprint() {
    let c = ec_chain(&rcgen::PKCS_ECDSA_P256_SHA256);
    let m = certs::from_secret(
        &secret(&scrambled_pem(&c, &c.key)),
        Some(CONTENT_TYPE_PEM),
        None,
        false,
    )
    .unwrap();
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the openssl CLI is needed for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(m.cert_pem.as_bytes())
        .unwrap();
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let openssl = out.trim().rsplit('=').next().unwrap().replace(':', "");
    assert_eq!(m.thumbprint, openssl);
}

#[test]
fn debug_hides_the_key() {
    let c = ec_chain(&rcgen::PKCS_ECDSA_P256_SHA256);
    let m = certs::from_secret(
        &secret(&scrambled_pem(&c, &c.key)),
        Some(CONTENT_TYPE_PEM),
        None,
        false,
    )
    .unwrap();
    let debug = format!("{m:?}");
    assert!(debug.contains("[REDACTED]"));
    let key_line = m.key_pem.expose_secret().lines().nth(1).unwrap().to_owned();
    assert!(!debug.contains(&key_line));
    assert!(!debug.contains(&m.pfx_base64.expose_secret()[..40]));
}

/// P-521 (offered by Key Vault, absent from ring): matched by the public point
/// the key carries; a key without it is refused with a clear message.
#[test]
fn p521_matches_by_carried_point() {
    let c = Chain {
        root: pem_der(&fixture_text("root.pem")),
        int: pem_der(&fixture_text("int.pem")),
        leaf: pem_der(&fixture_text("ec521-leaf.pem")),
        key: fixture_text("ec521-leaf.key"),
    };
    let m = certs::from_secret(
        &secret(&scrambled_pem(&c, &c.key)),
        Some(CONTENT_TYPE_PEM),
        None,
        false,
    )
    .unwrap();
    assert_eq!(m.leaf_der, c.leaf);
    assert_eq!(m.chain_der, vec![c.int.clone()]);
    assert_eq!(m.key_algorithm, "EC P-521");

    let nopub = fixture_text("ec521-leaf.sec1-nopub.key");
    let err = certs::from_secret(
        &secret(&scrambled_pem(&c, &nopub)),
        Some(CONTENT_TYPE_PEM),
        Some(&c.leaf),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::UnsupportedKey(_)), "{err}");
    assert!(
        err.to_string().contains("P-521 without its public point"),
        "{err}"
    );

    // A P-256 key claiming a P-521 leaf's place is still a mismatch.
    let err = certs::from_secret(
        &secret(&scrambled_pem(
            &c,
            &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .unwrap()
                .serialize_pem(),
        )),
        Some(CONTENT_TYPE_PEM),
        Some(&c.leaf),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

/// A self-signed leaf (no chain): nothing to drop or keep.
#[test]
fn self_signed_leaf_has_empty_chain() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params("leaf.example.test", false)
        .self_signed(&key)
        .unwrap();
    let text = [key.serialize_pem(), pem("CERTIFICATE", cert.der())].concat();
    for include_root in [false, true] {
        let m =
            certs::from_secret(&secret(&text), Some(CONTENT_TYPE_PEM), None, include_root).unwrap();
        assert_eq!(m.leaf_der, cert.der().to_vec());
        assert!(m.chain_der.is_empty() && m.chain_pem.is_empty());
        assert_eq!(m.fullchain_pem, m.cert_pem);
    }
}
