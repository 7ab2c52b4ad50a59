//! Certificates end to end: the emulator issues Key Vault certificates (PFX
//! and PEM secrets, RSA and EC keys), the real `kvsync` binary delivers them,
//! and `openssl` checks what was written: serial, key/cert match, chain
//! order, PFX readability (with and without a password), rotation, the
//! non-exportable error, expiry warnings, `check --online`, `verify` and
//! hook-group rollback. No key material may appear in any output.

use std::process::Output;

use crate::support::harness::{self, Harness, read, stamp, stderr, stdout};
use base64::Engine as _;
use kvsync_fake::{CertContentType, CertKey, CertOptions, IssuedCertificate};

/// `openssl ARGS` (stdin from `input`), asserting success; stdout.
fn openssl(args: &[&str], input: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn serial_of(cert_pem: &str) -> String {
    openssl(&["x509", "-noout", "-serial"], cert_pem.as_bytes())
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// PEM blocks of a file, in order.
fn blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that no output contains key material: a line from the middle of
/// the written key, and the base64 of the no-password PFX.
fn assert_no_leak(outputs: &[&Output], key_pem: &str, pfx: Option<&[u8]>) {
    let key_lines: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key_line = key_lines[key_lines.len() / 2];
    let pfx_b64 = pfx.map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    for o in outputs {
        let all = format!("{}{}", stdout(o), stderr(o));
        assert!(!all.contains(key_line), "key material in output:\n{all}");
        if let Some(b) = &pfx_b64 {
            assert!(!all.contains(&b[..40]), "PFX base64 in output:\n{all}");
        }
    }
}

const FILES: &str = r#"
[secrets]
web = { name = "web", type = "certificate" }

[[file]]
path = "out/key.pem"
secret = "web"
format = "key"

[[file]]
path = "out/fullchain.pem"
secret = "web"
format = "fullchain"

[[file]]
path = "out/chain.pem"
secret = "web"
format = "chain"

[[file]]
path = "out/site.pfx"
secret = "web"
format = "pfx"
"#;

async fn deliver(content_type: CertContentType, key: CertKey, scrambled: bool) {
    let h = Harness::new().await;
    let issued = h
        .emu
        .issue_certificate(
            "web",
            CertOptions {
                content_type,
                key,
                pem_order_scrambled: scrambled,
                ..CertOptions::default()
            },
        )
        .unwrap();
    let config = h.write_config(FILES);
    let out = h.once(&config, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let key_pem = read(&h.path("out/key.pem"));
    let fullchain = read(&h.path("out/fullchain.pem"));
    let chain = read(&h.path("out/chain.pem"));
    let certs = blocks(&fullchain);
    // Leaf then intermediate, no root (include_root is off).
    assert_eq!(certs.len(), 2, "{fullchain}");
    assert_eq!(certs[0], issued.cert_pem);
    assert_eq!(certs[1], h.emu.cert_intermediate_pem());
    assert_eq!(chain, h.emu.cert_intermediate_pem());
    assert_eq!(serial_of(&certs[0]), issued.serial);
    // The key belongs to the leaf.
    let key_pub = openssl(&["pkey", "-pubout"], key_pem.as_bytes());
    let cert_pub = openssl(&["x509", "-noout", "-pubkey"], certs[0].as_bytes());
    assert_eq!(key_pub, cert_pub);
    // The chain verifies against the issuing root.
    let root = h.path("root.pem");
    std::fs::write(&root, h.emu.cert_root_pem()).unwrap();
    let verified = openssl(
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            h.path("out/chain.pem").to_str().unwrap(),
        ],
        certs[0].as_bytes(),
    );
    assert!(verified.contains("OK"));
    // The PFX opens with an empty password and holds key + leaf + chain.
    let pfx = std::fs::read(h.path("out/site.pfx")).unwrap();
    let text = openssl(&["pkcs12", "-passin", "pass:", "-nodes"], &pfx);
    assert!(text.contains("BEGIN PRIVATE KEY"));
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
    assert_no_leak(&[&out], &key_pem, Some(&pfx));
}

#[tokio::test]
async fn pfx_rsa_delivers_key_fullchain_chain_and_pfx() {
    deliver(CertContentType::Pkcs12, CertKey::Rsa2048, false).await;
}

#[tokio::test]
async fn pfx_ec_out_of_order_chain() {
    deliver(CertContentType::Pkcs12, CertKey::EcP256, true).await;
}

#[tokio::test]
async fn pem_rsa_scrambled_blocks() {
    deliver(CertContentType::Pem, CertKey::Rsa2048, true).await;
}

#[tokio::test]
async fn pem_ec_delivers() {
    deliver(CertContentType::Pem, CertKey::EcP256, false).await;
}

fn ec_pem() -> CertOptions {
    CertOptions {
        content_type: CertContentType::Pem,
        key: CertKey::EcP256,
        ..CertOptions::default()
    }
}

#[tokio::test]
async fn pfx_with_password_from_another_secret_legacy_and_include_root() {
    let h = Harness::new().await;
    h.emu.issue_certificate("web", ec_pem()).unwrap();
    h.emu.set_secret("pfx-pass", "Tr1cky pass");
    let config = h.write_config(
        r#"
[secrets]
web = { name = "web", type = "certificate", include_root = true }
pfxpass = "pfx-pass"

[[file]]
path = "out/site.pfx"
secret = "web"
format = "pfx"
pfx_password = "pfxpass"

[[file]]
path = "out/legacy.pfx"
secret = "web"
format = "pfx"
pfx_password = "pfxpass"
pfx_legacy = true

[[file]]
path = "out/fullchain.pem"
secret = "web"
format = "fullchain"
"#,
    );
    let out = h.once(&config, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["out/site.pfx", "out/legacy.pfx"] {
        let pfx = std::fs::read(h.path(name)).unwrap();
        let text = openssl(&["pkcs12", "-passin", "pass:Tr1cky pass", "-nodes"], &pfx);
        assert!(text.contains("BEGIN PRIVATE KEY"), "{name}");
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 3, "{name}");
        // The empty password does not open it.
        let denied = std::process::Command::new("openssl")
            .args(["pkcs12", "-passin", "pass:", "-nodes", "-in"])
            .arg(h.path(name))
            .output()
            .unwrap();
        assert!(
            !denied.status.success(),
            "{name} opened without its password"
        );
    }
    let info = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-passin",
            "pass:Tr1cky pass",
            "-info",
            "-noout",
            "-in",
        ])
        .arg(h.path("out/legacy.pfx"))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stderr);
    assert!(info.contains("TripleDES"), "{info}");
    assert!(info.contains("sha1"), "{info}");
    let fullchain = read(&h.path("out/fullchain.pem"));
    let certs = blocks(&fullchain);
    assert_eq!(certs.len(), 3);
    assert_eq!(certs[2], h.emu.cert_root_pem());
    assert!(!stderr(&out).contains("Tr1cky"));
}

const ROTATE: &str = r#"
[secrets]
web = { name = "web", type = "certificate" }

[[file]]
path = "out/key.pem"
secret = "web"
format = "key"
on_change = "echo ran >> hook.log"

[[file]]
path = "out/cert.pem"
secret = "web"
format = "fullchain"
on_change = "echo ran >> hook.log"
"#;

fn cert_serial(h: &Harness) -> String {
    serial_of(&blocks(&read(&h.path("out/cert.pem")))[0])
}

#[tokio::test]
async fn rotation_writes_the_new_serial_and_runs_the_hook_once() {
    let h = Harness::new().await;
    let first = h.emu.issue_certificate("web", ec_pem()).unwrap();
    let config = h.write_config(ROTATE);
    let out1 = h.once(&config, &[]).await;
    assert!(out1.status.success(), "{}", stderr(&out1));
    assert_eq!(cert_serial(&h), first.serial);
    assert_eq!(read(&h.path("hook.log")), "ran\n");

    let second = h.emu.issue_certificate("web", ec_pem()).unwrap();
    assert_ne!(first.serial, second.serial);
    let out2 = h.once(&config, &[]).await;
    assert!(out2.status.success(), "{}", stderr(&out2));
    assert_eq!(cert_serial(&h), second.serial);
    assert_eq!(read(&h.path("hook.log")), "ran\nran\n");

    // Nothing changed: no hook.
    let out3 = h.once(&config, &[]).await;
    assert!(out3.status.success());
    assert_eq!(read(&h.path("hook.log")), "ran\nran\n");
    let key = read(&h.path("out/key.pem"));
    assert_no_leak(&[&out1, &out2, &out3], &key, None);
}

#[tokio::test]
async fn non_exportable_certificate_is_a_clear_error() {
    let h = Harness::new().await;
    h.emu.issue_certificate("web", ec_pem()).unwrap();
    assert!(h.emu.set_certificate_exportable("web", false));
    let config = h.write_config(ROTATE);
    let out = h.once(&config, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("certificate 'web'"), "{err}");
    assert!(err.contains("not exportable"), "{err}");
    assert!(!h.path("out/cert.pem").exists());
}

#[tokio::test]
async fn expiring_certificate_warns_and_check_online_reports_it() {
    let h = Harness::new().await;
    let issued = h
        .emu
        .issue_certificate(
            "web",
            CertOptions {
                validity: std::time::Duration::from_secs(2 * 24 * 3600),
                sans: Some(vec!["www.example.test".into(), "127.0.0.1".into()]),
                ..ec_pem()
            },
        )
        .unwrap();
    h.emu.set_secret("db", "hunter2");
    let config = h.write_config(&ROTATE.replace("[secrets]\n", "[secrets]\ndb = \"db\"\n"));
    let out = h.once(&config, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("certificate expires soon"),
        "{}",
        stderr(&out)
    );

    let config_arg = config.to_str().unwrap();
    let online = h
        .kvsync(&["check", "--online", "-c", config_arg], &[])
        .await;
    assert!(online.status.success(), "{}", stderr(&online));
    let text = stdout(&online);
    assert!(text.contains("CN=web"), "{text}");
    assert!(text.contains("www.example.test"), "{text}");
    assert!(text.contains(&issued.thumbprint), "{text}");
    assert!(
        text.contains("(1 days left)") || text.contains("(2 days left)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("version {}", issued.version)),
        "{text}"
    );
    assert!(text.contains("secret db (db): version"), "{text}");
    assert!(!text.contains("hunter2") && !stderr(&online).contains("hunter2"));

    // A fetch failure makes it exit 1.
    h.emu.delete_secret("db");
    let failed = h
        .kvsync(&["check", "--online", "-c", config_arg], &[])
        .await;
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stderr(&failed).contains("secret 'db'"),
        "{}",
        stderr(&failed)
    );
}

fn with_file_keys(base: &str, keys: &str) -> String {
    base.replace(
        "on_change = \"echo ran >> hook.log\"",
        &format!("on_change = \"echo ran >> hook.log\"\n{keys}"),
    )
}

#[tokio::test]
async fn failing_verify_keeps_the_live_files() {
    let h = Harness::new().await;
    let first = h.emu.issue_certificate("web", ec_pem()).unwrap();
    let ok = with_file_keys(
        ROTATE,
        r#"verify = "test -s \"$KVSYNC_CANDIDATE\" && test \"$KVSYNC_DESTINATION\" = \"$KVSYNC_CHANGED\"""#,
    );
    let config = h.write_config(&ok);
    let out = h.once(&config, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let before = (
        stamp(&h.path("out/cert.pem")),
        stamp(&h.path("out/key.pem")),
    );

    h.emu.issue_certificate("web", ec_pem()).unwrap();
    let bad = with_file_keys(ROTATE, r#"verify = "echo candidate rejected >&2; exit 4""#);
    let config = h.write_config(&bad);
    let out = h.once(&config, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("verify rejected"), "{err}");
    assert!(err.contains("candidate rejected"), "{err}");
    let after = (
        stamp(&h.path("out/cert.pem")),
        stamp(&h.path("out/key.pem")),
    );
    assert_eq!(before, after);
    assert_eq!(cert_serial(&h), first.serial);
    assert_eq!(read(&h.path("hook.log")), "ran\n");
    assert!(harness::temp_leftovers(&h.path("out")).is_empty());
}

#[tokio::test]
async fn rollback_restores_the_previous_files_when_the_hook_fails() {
    let h = Harness::new().await;
    let first = h.emu.issue_certificate("web", ec_pem()).unwrap();
    let config = h.write_config(ROTATE);
    assert!(h.once(&config, &[]).await.status.success());
    let key_before = read(&h.path("out/key.pem"));

    let second: IssuedCertificate = h.emu.issue_certificate("web", ec_pem()).unwrap();
    let failing = ROTATE
        .replace("echo ran >> hook.log", "echo reload failed >&2; exit 3")
        .replace("format = \"key\"", "format = \"key\"\nrollback = true")
        .replace(
            "format = \"fullchain\"",
            "format = \"fullchain\"\nrollback = true",
        );
    let config = h.write_config(&failing);
    let out = h.once(&config, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("previous file restored"), "{err}");
    assert_eq!(cert_serial(&h), first.serial);
    assert_ne!(cert_serial(&h), second.serial);
    assert_eq!(read(&h.path("out/key.pem")), key_before);
}

async fn check_errors(h: &Harness, body: &str) -> String {
    let config = h.write_config(body);
    let out = h
        .kvsync(&["check", "-c", config.to_str().unwrap()], &[])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    stderr(&out)
}

#[tokio::test]
async fn config_errors_of_the_certificate_keys() {
    let h = Harness::new().await;
    let err = check_errors(
        &h,
        r#"
[secrets]
plain = { name = "p", include_root = true }
web = { name = "web", type = "certificate" }

[[file]]
path = "a.pem"
secret = "web"
format = "fullchain"
pfx_password = "plain"
pfx_legacy = true

[[file]]
path = "b.pfx"
secret = "web"
format = "pfx"
pfx_password = "web"

[[file]]
path = "c.pfx"
secret = "web"
format = "pfx"
pfx_password = "missing"
rollback = true

[[file]]
path = "d.pem"
secret = "web"
format = "key"
on_change = "reload"
rollback = true

[[file]]
path = "e.pem"
secret = "web"
format = "cert"
on_change = "reload"
verify = ""
"#,
    )
    .await;
    for needle in [
        "secrets.plain.include_root: include_root applies only to certificates",
        "file[0].pfx_password: pfx_password applies only with format = \"pfx\"",
        "file[0].pfx_legacy: pfx_legacy applies only with format = \"pfx\"",
        "file[1].pfx_password: \"web\" is a certificate",
        "file[2].pfx_password: \"missing\" is not an alias",
        "file[2].rollback: rollback needs an on_change hook",
        "file[4].rollback: file[3] has the same on_change hook with rollback = true",
        "file[4].verify: expected a command",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    tokio::time::timeout(SECS_60, s.read_to_string(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

const SECS_60: std::time::Duration = std::time::Duration::from_secs(60);

/// `kvsync run`: expiry warning + metric, then (config reloads by SIGHUP)
/// a rejecting `verify` keeps the group, and a failing hook with
/// `rollback = true` restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_expiry_metric_verify_and_rollback() {
    use nix::sys::signal::Signal;
    let h = Harness::new().await;
    let first = h
        .emu
        .issue_certificate(
            "web",
            CertOptions {
                validity: std::time::Duration::from_secs(2 * 24 * 3600),
                ..ec_pem()
            },
        )
        .unwrap();
    let port = free_port();
    let agent_section =
        format!("[agent]\ninterval = \"1h\"\njitter = \"0s\"\nlisten = \"127.0.0.1:{port}\"\n");
    let config = h.write_config(&format!("{agent_section}{ROTATE}"));
    let mut agent = h.spawn_agent(&config, &[]);
    agent.wait_for("certificate expires soon", SECS_60).await;
    agent.round().await;
    assert_eq!(cert_serial(&h), first.serial);
    let metrics = http_get(port, "/metrics").await;
    let line = format!(
        "kvsync_certificate_expiry_timestamp_seconds{{alias=\"web\"}} {}",
        first.not_after
    );
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");

    // Rotation with a verify that rejects: the group stays as it was.
    h.emu.issue_certificate("web", ec_pem()).unwrap();
    let before = stamp(&h.path("out/cert.pem"));
    let bad = with_file_keys(ROTATE, r#"verify = "exit 5""#);
    h.write_config(&format!("{agent_section}{bad}"));
    agent.signal(Signal::SIGHUP);
    agent.wait_for("verify rejected", SECS_60).await;
    agent.round().await;
    assert_eq!(stamp(&h.path("out/cert.pem")), before);
    assert_eq!(cert_serial(&h), first.serial);

    // A failing hook with rollback: the new files are put back.
    let failing = ROTATE
        .replace("echo ran >> hook.log", "exit 3")
        .replace("format = \"key\"", "format = \"key\"\nrollback = true")
        .replace(
            "format = \"fullchain\"",
            "format = \"fullchain\"\nrollback = true",
        );
    h.write_config(&format!("{agent_section}{failing}"));
    agent.signal(Signal::SIGHUP);
    agent.wait_for("previous file restored", SECS_60).await;
    agent.round().await;
    assert_eq!(cert_serial(&h), first.serial);
    assert_eq!(read(&h.path("hook.log")), "ran\n");
    let (code, log) = agent.terminate().await;
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let key = read(&h.path("out/key.pem"));
    let key_line = key.lines().nth(2).unwrap();
    assert!(!log.iter().any(|l| l.contains(key_line)));
}
