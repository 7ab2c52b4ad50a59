//! Key Vault client (PROTOCOL.md §5) against a scripted loopback server over
//! plain HTTP (the TLS path is covered by the emulator tests): URLs and
//! headers, the bundle, every error mapping, retries and their bounds, and
//! that no token ever appears in an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::support::mock::{MockServer, Request, Response};
use base64::Engine;
use kvsync::http::RetryPolicy;
use kvsync::identity::cache::TokenCache;
use kvsync::identity::{AccessToken, IdentityError, SourceInfo, TokenSource};
use kvsync::vault::{VaultClient, VaultError};
use secrecy::ExposeSecret;

const AUDIENCE: &str = "https://kv.test";
const OID: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";
const VERSION: &str = "4387e9f3d6e14c459867679a90fd0f79";

/// Issues JWT-shaped tokens `…​.sig-N` and counts them.
struct Tokens {
    issued: AtomicUsize,
}

fn jwt(n: usize) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.TOKENSIG-{n}",
        b64(r#"{"alg":"none"}"#),
        b64(&format!(
            r#"{{"oid":"{OID}","appid":"app-1","aud":"{AUDIENCE}"}}"#
        ))
    )
}

#[async_trait::async_trait]
impl TokenSource for Tokens {
    async fn fetch(&self, _audience: &str) -> Result<AccessToken, IdentityError> {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(AccessToken {
            token: jwt(n).into(),
            expires_on: SystemTime::now() + Duration::from_secs(3600),
        })
    }
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "test",
            endpoint: String::new(),
        }
    }
}

struct Setup {
    server: MockServer,
    tokens: Arc<Tokens>,
    client: VaultClient,
    vault: url::Url,
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn setup_with(
    timeout: Duration,
    handler: impl Fn(&Request, usize) -> Response + Send + Sync + 'static,
) -> Setup {
    install_crypto();
    let server = MockServer::start(handler).await;
    let tokens = Arc::new(Tokens {
        issued: AtomicUsize::new(0),
    });
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap();
    let client = VaultClient::new(
        http,
        Arc::new(TokenCache::new(tokens.clone())),
        Some(AUDIENCE.into()),
    )
    .with_retry_policy(RetryPolicy::fast_for_tests(4));
    let vault = server.base.parse().unwrap();
    Setup {
        server,
        tokens,
        client,
        vault,
    }
}

async fn setup(handler: impl Fn(&Request, usize) -> Response + Send + Sync + 'static) -> Setup {
    setup_with(Duration::from_secs(10), handler).await
}

fn bundle(name: &str) -> String {
    format!(
        r#"{{"value":"s3cr3t","id":"https://v.vault.azure.net/secrets/{name}/{VERSION}","contentType":"text/plain","tags":{{"env":"prod"}},"attributes":{{"enabled":true,"nbf":1493938410,"exp":1893456000,"created":1493938410,"updated":1493938411}},"kid":"https://v.vault.azure.net/keys/{name}/{VERSION}","managed":true}}"#
    )
}

fn kv_error(status: u16, code: &str, inner: Option<&str>) -> Response {
    let inner = inner
        .map(|i| format!(r#","innererror":{{"code":"{i}"}}"#))
        .unwrap_or_default();
    Response::new(
        status,
        format!(
            r#"{{"error":{{"code":"{code}","message":"Caller MESSAGE-ECHO {}"{inner}}}}}"#,
            "x"
        ),
    )
}

fn unauthorized(resource: &str) -> Response {
    kv_error(401, "Unauthorized", None).header(
        "WWW-Authenticate",
        &format!(r#"Bearer authorization="https://login.windows.net/t", resource="{resource}""#),
    )
}

/// No token, no service message text in any error.
fn assert_clean(err: &VaultError) -> String {
    let msg = err.to_string();
    assert!(!msg.contains("TOKENSIG"), "token leaked: {msg}");
    assert!(
        !msg.contains("MESSAGE-ECHO"),
        "service message echoed: {msg}"
    );
    assert!(!msg.contains("s3cr3t"), "value leaked: {msg}");
    msg
}

#[tokio::test]
async fn get_latest_and_pinned() {
    let s = setup(|req, _| {
        let name = req.target.split('/').nth(2).unwrap().to_owned();
        Response::new(200, bundle(&name))
    })
    .await;
    let b = s
        .client
        .get_secret(&s.vault, "db-password", None)
        .await
        .unwrap();
    assert_eq!(b.value.expose_secret(), "s3cr3t");
    assert_eq!(b.name, "db-password");
    assert_eq!(b.version, VERSION);
    assert_eq!(b.content_type.as_deref(), Some("text/plain"));
    assert_eq!(b.tags.get("env").map(String::as_str), Some("prod"));
    assert!(b.enabled && b.managed && b.kid.is_some());
    assert_eq!(
        (b.not_before, b.expires, b.updated),
        (Some(1493938410), Some(1893456000), Some(1493938411))
    );
    assert!(!format!("{b:?}").contains("s3cr3t"));
    s.client
        .get_secret(&s.vault, "db-password", Some(VERSION))
        .await
        .unwrap();
    let reqs = s.server.requests();
    assert_eq!(
        reqs[0].target,
        "/secrets/db-password/?api-version=2025-07-01"
    );
    assert_eq!(
        reqs[1].target,
        format!("/secrets/db-password/{VERSION}?api-version=2025-07-01")
    );
    assert_eq!(reqs[0].header("accept"), Some("application/json"));
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {}", jwt(1)).as_str())
    );
    assert_eq!(s.tokens.issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_audience_sends_nothing() {
    install_crypto();
    let server = MockServer::start(|_, _| Response::new(200, bundle("a"))).await;
    let tokens = Arc::new(Tokens {
        issued: AtomicUsize::new(0),
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let client = VaultClient::new(http, Arc::new(TokenCache::new(tokens.clone())), None);
    let err = client
        .get_secret(&server.base.parse().unwrap(), "a", None)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::UnknownAudience { .. }), "{err}");
    assert!(err.to_string().contains("[auth] audience"), "{err}");
    let err = client
        .list_secrets(&server.base.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::UnknownAudience { .. }), "{err}");
    assert_eq!(server.requests().len(), 0);
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrent_gets_share_one_token() {
    let s = setup(|_, _| Response::new(200, bundle("a"))).await;
    let client = Arc::new(s.client);
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (c, v) = (client.clone(), s.vault.clone());
            tokio::spawn(async move { c.get_secret(&v, &format!("s{i}"), None).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.tokens.issued.load(Ordering::SeqCst), 1);
    assert_eq!(s.server.requests().len(), 24);
}

#[tokio::test]
async fn unauthorized_refreshes_once_then_succeeds() {
    let s = setup(|req, _| {
        if req.header("authorization").unwrap().ends_with("TOKENSIG-1") {
            unauthorized(AUDIENCE)
        } else {
            Response::new(200, bundle("a"))
        }
    })
    .await;
    s.client.get_secret(&s.vault, "a", None).await.unwrap();
    assert_eq!(s.tokens.issued.load(Ordering::SeqCst), 2);
    let reqs = s.server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[1]
            .header("authorization")
            .unwrap()
            .ends_with("TOKENSIG-2")
    );
}

#[tokio::test]
async fn unauthorized_twice_is_an_error() {
    let s = setup(|_, _| unauthorized(AUDIENCE)).await;
    let err = s.client.get_secret(&s.vault, "a", None).await.unwrap_err();
    let msg = assert_clean(&err);
    assert!(matches!(err, VaultError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("401 Unauthorized"), "{msg}");
    assert_eq!(s.server.requests().len(), 2);
    assert_eq!(s.tokens.issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn challenge_for_another_resource_is_refused() {
    let s = setup(|_, _| unauthorized("https://evil.example.com")).await;
    let err = s.client.get_secret(&s.vault, "a", None).await.unwrap_err();
    let msg = assert_clean(&err);
    assert!(matches!(err, VaultError::ChallengeMismatch { .. }), "{msg}");
    assert!(msg.contains("evil.example.com"), "{msg}");
    assert_eq!(s.server.requests().len(), 1);
    assert_eq!(s.tokens.issued.load(Ordering::SeqCst), 1);
}

async fn one_error(resp: fn() -> Response, version: Option<&str>) -> (VaultError, String, usize) {
    let s = setup(move |_, _| resp()).await;
    let err = s
        .client
        .get_secret(&s.vault, "db-password", version)
        .await
        .unwrap_err();
    let msg = assert_clean(&err);
    (err, msg, s.server.requests().len())
}

#[tokio::test]
async fn forbidden_names_identity_and_role() {
    let (err, msg, n) =
        one_error(|| kv_error(403, "Forbidden", Some("ForbiddenByRbac")), None).await;
    assert!(matches!(err, VaultError::Forbidden { .. }), "{msg}");
    for needle in [
        OID,
        "Key Vault Secrets User",
        "127.0.0.1",
        "db-password",
        "ForbiddenByRbac",
    ] {
        assert!(msg.contains(needle), "missing {needle}: {msg}");
    }
    assert!(!err.is_transient());
    assert_eq!(n, 1);
}

#[tokio::test]
async fn firewall_and_disabled() {
    let (err, msg, _) = one_error(
        || kv_error(403, "Forbidden", Some("ForbiddenByFirewall")),
        None,
    )
    .await;
    assert!(matches!(err, VaultError::Firewall { .. }), "{msg}");
    let (err, msg, _) = one_error(|| kv_error(403, "SecretDisabled", None), Some(VERSION)).await;
    assert!(matches!(err, VaultError::Disabled { .. }), "{msg}");
    assert!(msg.contains(VERSION), "{msg}");
}

#[tokio::test]
async fn not_found_latest_and_pinned() {
    let (err, msg, _) = one_error(|| kv_error(404, "SecretNotFound", None), None).await;
    assert!(matches!(err, VaultError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("SecretNotFound") && !msg.contains("version"),
        "{msg}"
    );
    let (err, msg, n) = one_error(|| kv_error(404, "SecretNotFound", None), Some(VERSION)).await;
    assert!(matches!(err, VaultError::NotFound { .. }), "{msg}");
    assert!(msg.contains(&format!("version {VERSION}")), "{msg}");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn throttled_honours_retry_after() {
    let s = setup(|_, i| {
        if i == 0 {
            kv_error(429, "Throttled", None).header("Retry-After", "1")
        } else {
            Response::new(200, bundle("a"))
        }
    })
    .await;
    s.client.get_secret(&s.vault, "a", None).await.unwrap();
    let reqs = s.server.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {gap:?}"
    );
}

#[tokio::test]
async fn throttled_without_retry_after_is_bounded() {
    let (err, msg, n) = one_error(|| kv_error(429, "Throttled", None), None).await;
    assert!(matches!(err, VaultError::Throttled { .. }), "{msg}");
    assert!(err.is_transient());
    assert_eq!(n, 4);
}

#[tokio::test]
async fn server_errors_retry_then_succeed_or_exhaust() {
    let s = setup(|_, i| {
        if i < 2 {
            kv_error(503, "ServiceUnavailable", None)
        } else {
            Response::new(200, bundle("a"))
        }
    })
    .await;
    s.client.get_secret(&s.vault, "a", None).await.unwrap();
    assert_eq!(s.server.requests().len(), 3);

    let (err, msg, n) = one_error(|| kv_error(500, "InternalError", None), None).await;
    assert!(
        matches!(err, VaultError::Status { status: 500, .. }),
        "{msg}"
    );
    assert!(err.is_transient());
    assert_eq!(n, 4);
}

#[tokio::test]
async fn timeouts_retry_then_succeed_or_exhaust() {
    let s = setup_with(Duration::from_millis(300), |_, i| {
        let r = Response::new(200, bundle("a"));
        if i == 0 {
            r.delayed(Duration::from_secs(3))
        } else {
            r
        }
    })
    .await;
    s.client.get_secret(&s.vault, "a", None).await.unwrap();
    assert_eq!(s.server.requests().len(), 2);

    let s = setup_with(Duration::from_millis(200), |_, _| {
        Response::new(200, bundle("a")).delayed(Duration::from_secs(3))
    })
    .await;
    let err = s.client.get_secret(&s.vault, "a", None).await.unwrap_err();
    let msg = assert_clean(&err);
    assert!(matches!(err, VaultError::Transport { .. }), "{msg}");
    assert!(msg.contains("timed out"), "{msg}");
    assert_eq!(s.server.requests().len(), 4);
}

#[tokio::test]
async fn malformed_bundles() {
    let (err, msg, _) = one_error(|| Response::new(200, "<html>s3cr3t</html>"), None).await;
    assert!(matches!(err, VaultError::Malformed { .. }), "{msg}");
    let (_, msg, _) = one_error(
        || Response::new(200, r#"{"id":"https://v/secrets/a/b"}"#),
        None,
    )
    .await;
    assert!(msg.contains("`value`"), "{msg}");
    let (_, msg, _) = one_error(|| Response::new(200, r#"{"value":"s3cr3t"}"#), None).await;
    assert!(msg.contains("`id`"), "{msg}");
}

#[tokio::test]
async fn list_follows_next_link_with_our_api_version() {
    let s = setup(|req, _| {
        if req.target.contains("skiptoken") {
            Response::new(200, r#"{"value":[{"id":"https://v/secrets/b","attributes":{"enabled":false,"updated":7}}],"nextLink":null}"#)
        } else {
            let host = req.header("host").unwrap().to_owned();
            Response::new(200, format!(
                r#"{{"value":[{{"id":"https://v/secrets/a","contentType":"text/plain","tags":{{"t":"1"}},"attributes":{{"enabled":true,"updated":5}}}}],"nextLink":"http://{host}/secrets?api-version=7.2&$skiptoken=abc&maxresults=25"}}"#
            ))
        }
    })
    .await;
    let items = s.client.list_secrets(&s.vault).await.unwrap();
    assert_eq!(
        items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!((items[0].updated, items[0].enabled), (Some(5), true));
    assert_eq!((items[1].updated, items[1].enabled), (Some(7), false));
    assert_eq!(items[0].content_type.as_deref(), Some("text/plain"));
    let reqs = s.server.requests();
    assert_eq!(
        reqs[0].target,
        "/secrets?api-version=2025-07-01&maxresults=25"
    );
    assert_eq!(
        reqs[1].target,
        "/secrets?api-version=2025-07-01&$skiptoken=abc&maxresults=25"
    );
}

#[tokio::test]
async fn list_is_bounded_and_stays_on_the_vault() {
    let s = setup(|_, _| {
        Response::new(
            200,
            r#"{"value":[],"nextLink":"https://evil.example.com/secrets?x=1"}"#,
        )
    })
    .await;
    let err = s.client.list_secrets(&s.vault).await.unwrap_err();
    assert!(matches!(err, VaultError::Malformed { .. }), "{err}");
    assert_eq!(s.server.requests().len(), 1);
}

#[tokio::test]
async fn list_that_never_ends_is_cut_off() {
    let s = setup(|req, _| {
        let host = req.header("host").unwrap().to_owned();
        Response::new(
            200,
            format!(r#"{{"value":[],"nextLink":"http://{host}/secrets?$skiptoken=again"}}"#),
        )
    })
    .await;
    let err = s.client.list_secrets(&s.vault).await.unwrap_err();
    assert!(err.to_string().contains("pages"), "{err}");
    assert_eq!(s.server.requests().len(), kvsync::vault::MAX_LIST_PAGES);
}

#[tokio::test]
async fn list_forbidden_is_distinguishable() {
    let s = setup(|_, _| kv_error(403, "Forbidden", Some("ForbiddenByRbac"))).await;
    let err = s.client.list_secrets(&s.vault).await.unwrap_err();
    let msg = assert_clean(&err);
    assert!(matches!(err, VaultError::ListForbidden { .. }), "{msg}");
    assert!(msg.contains(OID), "{msg}");
}

// ---- Against the emulator (kvsync-fake): real HTTPS, real HIMDS flow. ----

mod emulator;
