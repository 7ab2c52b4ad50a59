//! Azure Arc HIMDS challenge flow (PROTOCOL.md §1) against a scripted
//! loopback server: the happy path, every refused challenge path (the file
//! is never opened, nothing is sent a second time), and error messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::mock::{MockServer, Response};
use kvsync::http::RetryPolicy;
use kvsync::identity::arc::ArcSource;
use kvsync::identity::{IdentityError, TokenSource};
use secrecy::ExposeSecret;

const AUDIENCE: &str = "https://vault.azure.net";
const TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJvaWQiOiJ4In0.TOKEN-CANARY";
const CANARY: &str = "CANARY-must-never-leave-the-host";

fn write(path: &Path, bytes: &[u8]) {
    #[allow(clippy::disallowed_methods)]
    std::fs::write(path, bytes).unwrap();
}

fn token_json() -> String {
    format!(
        r#"{{"access_token":"{TOKEN}","expires_in":"3599","expires_on":"4102444800","resource":"{AUDIENCE}","token_type":"Bearer"}}"#
    )
}

/// A HIMDS that challenges with `realm` (header spelled `header_name`) and
/// accepts `Basic <expected_key>`.
async fn himds(
    realm: PathBuf,
    header_name: &'static str,
    expected_key: Option<String>,
) -> MockServer {
    MockServer::start(move |req, _| match req.header("authorization") {
        None => Response::new(401, r#"{"error":"unauthorized_client"}"#)
            .header(header_name, &format!("Basic realm={}", realm.display())),
        Some(auth)
            if Some(auth.to_owned()) == expected_key.as_ref().map(|k| format!("Basic {k}")) =>
        {
            Response::new(200, token_json())
        }
        Some(_) => Response::new(401, r#"{"error":"unauthorized_client"}"#),
    })
    .await
}

fn source(server: &MockServer, token_dir: &Path) -> ArcSource {
    let endpoint = format!("{}/metadata/identity/oauth2/token", server.base);
    ArcSource::new(
        endpoint.parse().unwrap(),
        token_dir.to_owned(),
        kvsync::http::metadata_client().unwrap(),
    )
    .with_retry_policy(RetryPolicy::fast_for_tests(3))
}

fn assert_clean(msg: &str) {
    assert!(!msg.contains(TOKEN), "token leaked: {msg}");
    assert!(!msg.contains(CANARY), "file contents leaked: {msg}");
}

#[tokio::test]
async fn challenge_flow_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("3c1f0f2e-aaaa.key");
    write(&key, b"0123456789abcdef-key");
    let server = himds(key, "Www-Authenticate", Some("0123456789abcdef-key".into())).await;
    let token = source(&server, dir.path()).fetch(AUDIENCE).await.unwrap();
    assert_eq!(token.token.expose_secret(), TOKEN);
    assert_eq!(
        token.expires_on,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_800)
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.header("metadata"), Some("true"));
        assert_eq!(
            r.target,
            "/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https%3A%2F%2Fvault.azure.net"
        );
    }
    assert_eq!(reqs[0].header("authorization"), None);
}

#[tokio::test]
async fn quoted_lowercase_realm_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    write(&key, b"k1");
    let realm = key.display().to_string();
    let server = MockServer::start(move |req, _| match req.header("authorization") {
        None => {
            Response::new(401, "").header("WWW-AUTHENTICATE", &format!("basic REALM=\"{realm}\""))
        }
        Some("Basic k1") => Response::new(200, token_json()),
        Some(_) => Response::new(401, ""),
    })
    .await;
    source(&server, dir.path()).fetch(AUDIENCE).await.unwrap();
}

/// Runs a challenge naming `realm`, expects a refusal, and checks that
/// nothing was sent a second time and nothing leaked.
async fn expect_refused(realm: PathBuf, token_dir: &Path) -> String {
    let server = himds(realm, "WWW-Authenticate", Some(CANARY.into())).await;
    let err = source(&server, token_dir)
        .fetch(AUDIENCE)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, IdentityError::ChallengeRefused { .. }),
        "{msg}"
    );
    assert!(msg.contains("impersonating"), "{msg}");
    assert_clean(&msg);
    assert_eq!(
        server.requests().len(),
        1,
        "a refused challenge must not be answered"
    );
    msg
}

#[tokio::test]
async fn refuses_etc_shadow() {
    let dir = tempfile::tempdir().unwrap();
    let msg = expect_refused(PathBuf::from("/etc/shadow"), dir.path()).await;
    assert!(msg.contains("/etc/shadow"), "{msg}");
}

#[tokio::test]
async fn refuses_dotdot_traversal() {
    let root = tempfile::tempdir().unwrap();
    let tokens = root.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    write(&root.path().join("x.key"), CANARY.as_bytes());
    expect_refused(tokens.join("..").join("x.key"), &tokens).await;
}

#[cfg(unix)]
#[tokio::test]
async fn refuses_symlink_out_of_token_dir() {
    let root = tempfile::tempdir().unwrap();
    let tokens = root.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let outside = root.path().join("secret.txt");
    write(&outside, CANARY.as_bytes());
    let link = tokens.join("evil.key");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let msg = expect_refused(link, &tokens).await;
    assert!(msg.contains("symlink"), "{msg}");
}

#[tokio::test]
async fn refuses_non_key_file_in_token_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    write(&file, CANARY.as_bytes());
    expect_refused(file, dir.path()).await;
}

#[tokio::test]
async fn refuses_file_outside_token_dir() {
    let root = tempfile::tempdir().unwrap();
    let tokens = root.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let file = root.path().join("a.key");
    write(&file, CANARY.as_bytes());
    expect_refused(file, &tokens).await;
}

#[tokio::test]
async fn size_limit_4096_accepted_4097_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.key");
    write(&big, &[b'C'; 4097]);
    let msg = expect_refused(big, dir.path()).await;
    assert!(msg.contains("4096"), "{msg}");

    let max = dir.path().join("max.key");
    let key = "k".repeat(4096);
    write(&max, key.as_bytes());
    let server = himds(max, "WWW-Authenticate", Some(key)).await;
    source(&server, dir.path()).fetch(AUDIENCE).await.unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn second_401_is_an_error_not_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    write(&key, CANARY.as_bytes());
    // Expects a different key: every answer is 401.
    let server = himds(key, "WWW-Authenticate", Some("other".into())).await;
    let err = source(&server, dir.path())
        .fetch(AUDIENCE)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, IdentityError::Status { status: 401, .. }),
        "{msg}"
    );
    assert_clean(&msg);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn missing_www_authenticate_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start(|_, _| Response::new(401, "")).await;
    let err = source(&server, dir.path())
        .fetch(AUDIENCE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("WWW-Authenticate"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn connection_refused_says_himds_not_running() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let src = ArcSource::new(
        format!("http://127.0.0.1:{port}/metadata/identity/oauth2/token")
            .parse()
            .unwrap(),
        dir.path().to_owned(),
        kvsync::http::metadata_client().unwrap(),
    )
    .with_retry_policy(RetryPolicy::fast_for_tests(2));
    let err = src.fetch(AUDIENCE).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IdentityError::ArcNotRunning { .. }), "{msg}");
    assert!(
        msg.contains("himds service") && msg.contains("not running"),
        "{msg}"
    );
    assert!(err.is_transient());
}

async fn token_answer(body: &'static str) -> IdentityError {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start(move |_, _| Response::new(200, body)).await;
    source(&server, dir.path())
        .fetch(AUDIENCE)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn malformed_answers_name_the_field() {
    let err = token_answer("<html>TOKEN-CANARY</html>").await;
    assert!(matches!(err, IdentityError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("JSON"), "{err}");
    assert_clean(&err.to_string());
    let err = token_answer(r#"{"expires_in":"10"}"#).await;
    assert!(err.to_string().contains("access_token"), "{err}");
    let err =
        token_answer(r#"{"access_token":"eyJhbGciOiJub25lIn0.eyJvaWQiOiJ4In0.TOKEN-CANARY"}"#)
            .await;
    assert!(err.to_string().contains("expires_in"), "{err}");
    assert_clean(&err.to_string());
}

#[tokio::test]
async fn transient_statuses_are_retried_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    write(&key, b"k");
    let realm = key.display().to_string();
    let server = MockServer::start(move |req, i| match (i, req.header("authorization")) {
        (0, _) => Response::new(503, ""),
        (1, _) => Response::new(410, ""),
        (_, None) => {
            Response::new(401, "").header("WWW-Authenticate", &format!("Basic realm={realm}"))
        }
        (_, Some(_)) => Response::new(200, token_json()),
    })
    .await;
    let src = source(&server, dir.path()).with_retry_policy(RetryPolicy::fast_for_tests(5));
    src.fetch(AUDIENCE).await.unwrap();
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn retries_are_bounded_and_4xx_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start(|_, _| Response::new(500, r#"{"error":"server_error"}"#)).await;
    let err = source(&server, dir.path())
        .fetch(AUDIENCE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::Status { status: 500, .. }),
        "{err}"
    );
    assert_eq!(server.requests().len(), 3);

    let server =
        MockServer::start(|_, _| Response::new(400, r#"{"error":"invalid_request"}"#)).await;
    let err = source(&server, dir.path())
        .fetch(AUDIENCE)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_request"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn cache_over_arc_fetches_once_for_concurrent_callers() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    write(&key, b"k");
    let server = himds(key, "WWW-Authenticate", Some("k".into())).await;
    let cache = Arc::new(kvsync::identity::cache::TokenCache::new(Arc::new(source(
        &server,
        dir.path(),
    ))));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.get(AUDIENCE).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.requests().len(), 2);
}

// ---- Against the emulator (kvsync-fake): the real challenge flow. ----

mod emulator {
    use super::*;
    use kvsync::config::{AuthConfig, AuthMethod};
    use kvsync::env::Env;
    use kvsync_fake::{Emulator, Options};

    fn arc_for(emu: &Emulator) -> ArcSource {
        let auth = AuthConfig {
            method: AuthMethod::Arc,
            user_assigned: None,
            identity_endpoint: None,
            imds_endpoint: None,
            authority_host: None,
            audience: None,
            test_arc_token_dir: Some(emu.token_dir().to_owned()),
            ..AuthConfig::with_method(AuthMethod::Arc)
        };
        let env = Env::empty().with("IDENTITY_ENDPOINT", emu.himds_token_endpoint());
        ArcSource::from_config(&auth, &env, kvsync::http::metadata_client().unwrap())
            .unwrap()
            .with_retry_policy(RetryPolicy::fast_for_tests(3))
    }

    #[tokio::test]
    async fn challenge_flow_issues_a_token_with_claims() {
        let emu = Emulator::start(Options::default()).await.unwrap();
        let token = arc_for(&emu).fetch(AUDIENCE).await.unwrap();
        let claims = kvsync::identity::claims::decode(token.token.expose_secret()).unwrap();
        assert_eq!(
            claims.oid.as_deref(),
            Some(emu.identity().object_id.as_str())
        );
        assert_eq!(claims.aud.as_deref(), Some(AUDIENCE));
        assert!(token.expires_on > std::time::SystemTime::now());
        let c = emu.counters();
        assert_eq!(
            (c.himds_requests, c.himds_challenges, c.tokens_issued),
            (2, 1, 1)
        );
    }

    async fn expect_emulator_refusal(emu: &Emulator, realm: PathBuf) {
        emu.set_challenge_path(Some(realm));
        let err = arc_for(emu).fetch(AUDIENCE).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, IdentityError::ChallengeRefused { .. }),
            "{msg}"
        );
        assert!(msg.contains("impersonating"), "{msg}");
        assert_clean(&msg);
        let c = emu.counters();
        assert_eq!((c.himds_requests, c.tokens_issued), (1, 0), "no second GET");
    }

    #[tokio::test]
    async fn emulator_challenge_naming_etc_shadow_is_refused() {
        let emu = Emulator::start(Options::default()).await.unwrap();
        expect_emulator_refusal(&emu, PathBuf::from("/etc/shadow")).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn emulator_challenge_naming_a_symlink_is_refused() {
        let emu = Emulator::start(Options::default()).await.unwrap();
        let outside = tempfile::tempdir().unwrap();
        let canary = outside.path().join("canary.txt");
        write(&canary, CANARY.as_bytes());
        let link = emu.token_dir().join("evil.key");
        std::os::unix::fs::symlink(&canary, &link).unwrap();
        expect_emulator_refusal(&emu, link).await;
    }

    #[tokio::test]
    async fn emulator_traversal_is_refused() {
        let emu = Emulator::start(Options::default()).await.unwrap();
        let parent = emu.token_dir().parent().unwrap().to_owned();
        write(&parent.join("x.key"), CANARY.as_bytes());
        expect_emulator_refusal(&emu, emu.token_dir().join("..").join("x.key")).await;
    }

    #[tokio::test]
    async fn himds_down_means_not_running() {
        let emu = Emulator::start(Options::default()).await.unwrap();
        emu.set_himds_down(true).await.unwrap();
        let err = arc_for(&emu).fetch(AUDIENCE).await.unwrap_err();
        assert!(matches!(err, IdentityError::ArcNotRunning { .. }), "{err}");
    }

    #[tokio::test]
    async fn himds_transient_fault_is_retried() {
        let emu = Emulator::start(Options::default()).await.unwrap();
        emu.push_fault(kvsync_fake::Fault {
            service: kvsync_fake::Service::Himds,
            status: 503,
            times: 1,
            ..Default::default()
        });
        arc_for(&emu).fetch(AUDIENCE).await.unwrap();
        assert_eq!(emu.counters().tokens_issued, 1);
    }
}
