//! End-to-end tests of the emulator over real loopback HTTP/HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use kvsync_fake::{Emulator, Fault, Options, SecretOptions, Service};
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

const API: &str = "2025-07-01";
const KV: &str = "https://vault.azure.net";

async fn emu() -> Emulator {
    Emulator::start(Options::default()).await.unwrap()
}

fn http() -> reqwest::Client {
    // reqwest with `rustls-no-provider` needs a process-wide provider even
    // for plain-HTTP clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn https(emu: &Emulator) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn himds_get(emu: &Emulator, client: &reqwest::Client) -> reqwest::RequestBuilder {
    client
        .get(emu.himds_token_endpoint())
        .query(&[("api-version", "2020-06-01"), ("resource", KV)])
        .header("Metadata", "true")
}

fn realm(resp: &reqwest::Response) -> String {
    let h = resp
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    h.strip_prefix("Basic realm=").unwrap().to_owned()
}

/// The full Arc flow; returns the access token.
async fn arc_token(emu: &Emulator) -> String {
    let c = http();
    let first = himds_get(emu, &c).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let key = std::fs::read_to_string(realm(&first)).unwrap();
    let second = himds_get(emu, &c)
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let body: Value = second.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn kv_get(
    emu: &Emulator,
    token: Option<&str>,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let url = format!("{}{path}", emu.vault_url());
    let mut req = https(emu).get(url).query(&[("api-version", API)]);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap())
}

#[tokio::test]
async fn himds_challenge_flow_single_use_key() {
    let emu = emu().await;
    let c = http();
    let first = himds_get(&emu, &c).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let path = std::path::PathBuf::from(realm(&first));
    assert_eq!(path.parent().unwrap(), emu.token_dir());
    assert!(path.to_str().unwrap().ends_with(".key"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
    let key = std::fs::read_to_string(&path).unwrap();
    assert_eq!(emu.outstanding_challenges(), 1);

    let ok = himds_get(&emu, &c)
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let tok: Value = ok.json().await.unwrap();
    for field in [
        "access_token",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(tok[field].is_string(), "{field} must be a string: {tok}");
    }
    assert_eq!(tok["resource"], KV);
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["access_token"].as_str().unwrap().split('.').count(), 3);
    assert!(!path.exists(), "key file is deleted after use");
    assert_eq!(emu.outstanding_challenges(), 0);

    let reused = himds_get(&emu, &c)
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert!(reused.headers().get("www-authenticate").is_none());

    let c = emu.counters();
    assert_eq!(
        (c.himds_requests, c.himds_challenges, c.tokens_issued),
        (3, 1, 1)
    );
    assert_eq!(c.by_path["/metadata/identity/oauth2/token"], 3);
}

#[tokio::test]
async fn himds_requires_metadata_header_and_params() {
    let emu = emu().await;
    let c = http();
    let resp = c
        .get(emu.himds_token_endpoint())
        .query(&[("api-version", "2020-06-01"), ("resource", KV)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].is_string());

    let resp = c
        .get(emu.himds_token_endpoint())
        .query(&[("api-version", "2020-06-01")])
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(emu.counters().himds_challenges, 0);
}

#[tokio::test]
async fn himds_fixed_challenge_path_rejects_every_key() {
    let emu = emu().await;
    emu.set_challenge_path(Some("/etc/shadow".into()));
    let c = http();
    let first = himds_get(&emu, &c).send().await.unwrap();
    assert_eq!(realm(&first), "/etc/shadow");
    let second = himds_get(&emu, &c)
        .header("Authorization", "Basic anything")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(emu.counters().tokens_issued, 0);
}

#[tokio::test]
async fn instance_metadata() {
    let emu = emu().await;
    let c = http();
    let url = format!("{}/metadata/instance/compute", emu.himds_base());
    let resp = c
        .get(&url)
        .query(&[("api-version", "2020-06-01")])
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tags"], "a:1;b:2");
    emu.set_instance(serde_json::json!({"name": "web-01"}));
    let url = format!("{}/metadata/instance", emu.himds_base());
    let resp = c
        .get(&url)
        .query(&[("api-version", "2020-06-01")])
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["compute"]["name"], "web-01");
    let resp = c
        .get(&url)
        .query(&[("api-version", "2020-06-01")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn kv_rejects_missing_unknown_and_wrong_audience_tokens() {
    let emu = emu().await;
    emu.set_secret("a", "v");
    let (status, headers, body) = kv_get(&emu, None, "/secrets/a/").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    let tenant = emu.identity().tenant_id;
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://login.windows.net/{tenant}\", resource=\"https://vault.azure.net\""
        )
    );
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("AKV10000")
    );

    let (status, _, _) = kv_get(&emu, Some("a.b.c"), "/secrets/a").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = emu.issue_token("https://storage.azure.com");
    let (status, _, body) = kv_get(&emu, Some(&other), "/secrets/a").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("AKV10022")
    );

    let good = emu.issue_token(KV);
    emu.invalidate_tokens();
    let (status, _, _) = kv_get(&emu, Some(&good), "/secrets/a").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(emu.counters().kv_unauthorized, 4);
    assert_eq!(emu.counters().kv_gets, 0);

    // api-version is required.
    let resp = https(&emu)
        .get(format!("{}/secrets/a", emu.vault_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BadParameter");
}

#[tokio::test]
async fn kv_get_latest_pinned_missing_and_disabled() {
    let emu = emu().await;
    let tags = [("env".to_owned(), "prod".to_owned())]
        .into_iter()
        .collect();
    let v1 = emu.set_secret_with(
        "Db-Password",
        "one",
        SecretOptions {
            content_type: Some("text/plain".into()),
            tags: Some(tags),
            expires: Some(1_893_456_000),
            ..SecretOptions::default()
        },
    );
    let v2 = emu.set_secret("db-password", "two");
    let token = arc_token(&emu).await;

    let (status, _, body) = kv_get(&emu, Some(&token), "/secrets/DB-PASSWORD/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"], "two");
    assert_eq!(
        body["id"],
        format!("{}/secrets/Db-Password/{v2}", emu.vault_url())
    );
    assert!(body.get("contentType").is_none() && body.get("tags").is_none());
    assert!(body["attributes"]["created"].is_u64());
    assert!(body["attributes"].get("exp").is_none());
    assert_eq!(body["attributes"]["recoveryLevel"], "Recoverable+Purgeable");

    let (status, _, body) = kv_get(&emu, Some(&token), &format!("/secrets/db-password/{v1}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"], "one");
    assert_eq!(body["contentType"], "text/plain");
    assert_eq!(body["tags"]["env"], "prod");
    assert_eq!(body["attributes"]["exp"], 1_893_456_000);

    let (status, _, body) = kv_get(&emu, Some(&token), "/secrets/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SecretNotFound");
    let (status, _, _) = kv_get(
        &emu,
        Some(&token),
        "/secrets/db-password/00000000000000000000000000000000",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert!(emu.set_version_enabled("db-password", &v2, false));
    let (status, _, body) = kv_get(&emu, Some(&token), "/secrets/db-password").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "Forbidden");
    assert_eq!(body["error"]["innererror"]["code"], "SecretDisabled");

    assert!(emu.delete_secret("db-password"));
    let (status, _, _) = kv_get(&emu, Some(&token), &format!("/secrets/db-password/{v1}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(emu.counters().kv_gets, 6);
}

#[tokio::test]
async fn kv_list_pages_with_next_link() {
    let emu = emu().await;
    for i in 0..30 {
        emu.set_secret(&format!("secret-{i:02}"), "v");
    }
    emu.set_secret("secret-00", "v2");
    let token = emu.issue_token(KV);
    let client = https(&emu);
    let mut url = format!("{}/secrets?api-version={API}", emu.vault_url());
    let mut names = Vec::new();
    let mut pages = 0;
    for _ in 0..10 {
        let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        pages += 1;
        for item in body["value"].as_array().unwrap() {
            assert!(item.get("value").is_none());
            assert!(item["attributes"]["updated"].is_u64());
            names.push(
                item["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        match body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with("https://localhost:") && next.contains("$skiptoken="));
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(names.len(), 30);
    assert_eq!(names[0], "secret-00");
    assert_eq!(emu.counters().kv_lists, 2);

    let (status, _, body) = kv_get(&emu, Some(&token), "/secrets/secret-00/versions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
    assert!(body["nextLink"].is_null());
}

#[tokio::test]
async fn faults_with_retry_after_and_innererror() {
    let emu = emu().await;
    emu.set_secret("s", "v");
    let token = emu.issue_token(KV);
    emu.push_fault(Fault {
        status: 429,
        retry_after: Some(3),
        path_contains: Some("/secrets/s".into()),
        ..Fault::default()
    });
    emu.push_fault(Fault {
        status: 403,
        code: Some("ForbiddenByRbac".into()),
        ..Fault::default()
    });
    let (status, headers, body) = kv_get(&emu, Some(&token), "/secrets/s/").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(body["error"]["code"], "Throttled");
    let (status, _, body) = kv_get(&emu, Some(&token), "/secrets/s/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "Forbidden");
    assert_eq!(body["error"]["innererror"]["code"], "ForbiddenByRbac");
    let (status, _, _) = kv_get(&emu, Some(&token), "/secrets/s/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(emu.pending_faults(), 0);
    let c = emu.counters();
    assert_eq!((c.kv_requests, c.kv_gets), (3, 1));
    emu.reset_counters();
    assert_eq!(emu.counters(), kvsync_fake::Counters::default());

    emu.push_fault(Fault {
        service: Service::Himds,
        status: 503,
        ..Fault::default()
    });
    let resp = himds_get(&emu, &http()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn kv_speaks_http2_over_tls() {
    let emu = emu().await;
    let token = emu.issue_token(KV);
    emu.set_secret("s", "v");
    let resp = https(&emu)
        .get(format!("{}/secrets/s", emu.vault_url()))
        .query(&[("api-version", API)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn hang_fault_times_out_the_client() {
    let emu = emu().await;
    emu.push_fault(Fault::hang(Service::KeyVault, 1));
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(rustls_config_for(&emu))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .get(format!("{}/secrets/s?api-version={API}", emu.vault_url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
}

fn rustls_config_for(emu: &Emulator) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn himds_down_refuses_connections_then_recovers() {
    let emu = emu().await;
    emu.set_himds_down(true).await.unwrap();
    let err = himds_get(&emu, &http()).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    emu.set_himds_down(false).await.unwrap();
    let token = arc_token(&emu).await;
    assert!(!token.is_empty());
}

#[tokio::test]
async fn ca_file_matches_ca_pem() {
    let emu = emu().await;
    assert_eq!(
        std::fs::read_to_string(emu.ca_file()).unwrap(),
        emu.ca_pem()
    );
}

#[tokio::test]
async fn himds_echoes_selector_only_when_enabled() {
    let emu = emu().await;
    let c = http();
    for echo in [false, true] {
        emu.set_himds_selector_echo(echo);
        let get = || himds_get(&emu, &c).query(&[("client_id", "abc")]);
        let first = get().send().await.unwrap();
        let key = std::fs::read_to_string(realm(&first)).unwrap();
        let body: Value = get()
            .header("Authorization", format!("Basic {key}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body.get("client_id").is_some(), echo, "{body}");
    }
}

#[tokio::test]
async fn strict_api_version_and_empty_first_page() {
    let emu = emu().await;
    for i in 0..3 {
        emu.set_secret(&format!("s{i}"), "v");
    }
    emu.set_vault_api_versions(Some(vec![API.to_owned()]));
    emu.set_list_empty_first_page(true);
    let token = emu.issue_token(KV);
    let client = https(&emu);
    let resp = client
        .get(format!("{}/secrets?api-version=7.2", emu.vault_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let (status, _, first) = kv_get(&emu, Some(&token), "/secrets").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["value"].as_array().unwrap().len(), 0);
    let next = first["nextLink"].as_str().unwrap();
    let second: Value = client
        .get(next)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["value"].as_array().unwrap().len(), 3);
    assert!(second["nextLink"].is_null());
}

#[tokio::test]
async fn kv_speaks_http1_when_offered_only_http1() {
    let emu = emu().await;
    emu.set_secret("s", "v");
    let mut cfg = rustls_config_for(&emu);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/secrets/s", emu.vault_url()))
        .query(&[("api-version", API)])
        .bearer_auth(emu.issue_token(KV))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn vault_cert_is_valid_for_127_0_0_1_too() {
    let emu = emu().await;
    let url = format!("https://{}/secrets?api-version={API}", emu.vault_addr());
    let resp = https(&emu).get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
