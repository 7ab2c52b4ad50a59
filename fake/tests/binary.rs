//! The standalone `kvsync-fake serve` process: ready line, admin API, the
//! token flow against its state dir, and a clean exit on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

/// Generous bound for the process to start or stop on a loaded 2-core box.
const PROCESS_WAIT: Duration = Duration::from_secs(60);

/// Kills the child if the test fails before the SIGTERM step.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap()
}

#[tokio::test]
async fn serve_admin_flow_and_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvsync-fake"))
        .args(["serve", "--state-dir"])
        .arg(dir.path())
        .args(["--secret", "db=hunter2", "--latency-kv", "1ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = KillOnDrop(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(PROCESS_WAIT).expect("ready line");
    assert!(line.starts_with("kvsync-fake ready "), "{line}");
    let himds = field(&line, "himds=").to_owned();
    let vault = field(&line, "vault=").to_owned();
    assert_eq!(
        field(&line, "ca="),
        dir.path().join("ca.pem").to_str().unwrap()
    );

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let put: Value = http
        .put(format!(
            "{himds}/admin/secrets/api-key?contentType=text/plain"
        ))
        .body("k3y")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(put["version"].as_str().unwrap().len(), 32);

    // Arc flow against the process.
    let url = format!("{himds}/metadata/identity/oauth2/token");
    let q = [
        ("api-version", "2020-06-01"),
        ("resource", "https://vault.azure.net"),
    ];
    let first = http
        .get(&url)
        .query(&q)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let realm = first.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .strip_prefix("Basic realm=")
        .unwrap()
        .to_owned();
    assert!(realm.starts_with(dir.path().join("tokens").to_str().unwrap()));
    let key = std::fs::read_to_string(&realm).unwrap();
    let tok: Value = http
        .get(&url)
        .query(&q)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"].as_str().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .build()
        .unwrap();
    for (name, want) in [("db", "hunter2"), ("api-key", "k3y")] {
        let body: Value = https
            .get(format!("{vault}/secrets/{name}/?api-version=2025-07-01"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["value"], want);
    }

    let counters: Value = http
        .get(format!("{himds}/admin/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["kv_gets"], 2);
    assert_eq!(counters["himds_challenges"], 1);
    let reset = http
        .post(format!("{himds}/admin/counters/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), reqwest::StatusCode::NO_CONTENT);
    let fault = http
        .post(format!("{himds}/admin/faults"))
        .json(&serde_json::json!({"status": 503, "retry_after": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), reqwest::StatusCode::NO_CONTENT);
    let resp = https
        .get(format!("{vault}/secrets/db?api-version=2025-07-01"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");

    let mut child = guard.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let exit = rx
        .recv_timeout(PROCESS_WAIT)
        .expect("exit after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
