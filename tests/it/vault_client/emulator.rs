//! Key Vault client against the emulator (kvsync-fake): real HTTPS with
//! the test CA, the real HIMDS challenge flow, request counters.
use super::*;
use kvsync::env::Env;
use kvsync::identity::arc::ArcSource;
use kvsync_fake::{DEFAULT_VAULT_AUDIENCE, Emulator, Fault, Options, Service};

struct Emu {
    emu: Emulator,
    client: Arc<VaultClient>,
    vault: url::Url,
}

async fn start_with_timeout(timeout: Duration) -> Emu {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let arc = ArcSource::new(
        emu.himds_token_endpoint().parse().unwrap(),
        emu.token_dir().to_owned(),
        kvsync::http::metadata_client().unwrap(),
    )
    .with_retry_policy(RetryPolicy::fast_for_tests(3));
    let http = kvsync::http::vault_client_with_timeout(&Env::empty(), Some(emu.ca_file()), timeout)
        .unwrap();
    let client = VaultClient::new(
        http,
        Arc::new(TokenCache::new(Arc::new(arc))),
        Some(DEFAULT_VAULT_AUDIENCE.to_owned()),
    )
    .with_retry_policy(RetryPolicy::fast_for_tests(4));
    let vault = emu.vault_url().parse().unwrap();
    Emu {
        emu,
        client: Arc::new(client),
        vault,
    }
}

async fn start() -> Emu {
    start_with_timeout(Duration::from_secs(10)).await
}

fn fault(status: u16, code: Option<&str>, times: usize) -> Fault {
    Fault {
        service: Service::KeyVault,
        status,
        code: code.map(str::to_owned),
        times,
        ..Default::default()
    }
}

fn clean(err: &VaultError) -> String {
    let msg = err.to_string();
    assert!(!msg.contains("eyJ"), "token leaked: {msg}");
    assert!(!msg.contains("v4lue"), "value leaked: {msg}");
    msg
}

#[tokio::test]
async fn latest_pinned_and_one_token_for_many_gets() {
    let e = start().await;
    let v1 = e.emu.set_secret("db-password", "old-v4lue");
    let v2 = e.emu.set_secret("db-password", "new-v4lue");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, v) = (e.client.clone(), e.vault.clone());
            tokio::spawn(async move { c.get_secret(&v, "db-password", None).await.unwrap() })
        })
        .collect();
    for t in tasks {
        let b = t.await.unwrap();
        assert_eq!(b.value.expose_secret(), "new-v4lue");
        assert_eq!(b.version, v2);
    }
    let b = e
        .client
        .get_secret(&e.vault, "db-password", Some(&v1))
        .await
        .unwrap();
    assert_eq!(b.value.expose_secret(), "old-v4lue");
    let c = e.emu.counters();
    assert_eq!(c.tokens_issued, 1);
    assert_eq!(c.kv_gets, 21);
    assert_eq!(c.kv_unauthorized, 0);
}

#[tokio::test]
async fn rejected_token_is_refreshed_once() {
    let e = start().await;
    e.emu.set_secret("a", "v4lue");
    e.client.get_secret(&e.vault, "a", None).await.unwrap();
    e.emu.invalidate_tokens();
    e.client.get_secret(&e.vault, "a", None).await.unwrap();
    let c = e.emu.counters();
    assert_eq!(
        (c.tokens_issued, c.kv_unauthorized, c.kv_requests),
        (2, 1, 3)
    );
}

#[tokio::test]
async fn unauthorized_twice_is_an_error() {
    let e = start().await;
    e.emu.set_secret("a", "v4lue");
    e.emu.push_fault(fault(401, None, 2));
    let err = e.client.get_secret(&e.vault, "a", None).await.unwrap_err();
    assert!(
        matches!(err, VaultError::Unauthorized { .. }),
        "{}",
        clean(&err)
    );
    assert_eq!(e.emu.counters().tokens_issued, 2);
    assert_eq!(e.emu.pending_faults(), 0);
}

#[tokio::test]
async fn forbidden_firewall_disabled_not_found() {
    let e = start().await;
    let version = e.emu.set_secret("a", "v4lue");
    e.emu.push_fault(fault(403, Some("ForbiddenByRbac"), 1));
    let err = e.client.get_secret(&e.vault, "a", None).await.unwrap_err();
    let msg = clean(&err);
    assert!(matches!(err, VaultError::Forbidden { .. }), "{msg}");
    assert!(msg.contains(&e.emu.identity().object_id), "{msg}");
    assert!(
        msg.contains("Key Vault Secrets User") && msg.contains("Forbidden/ForbiddenByRbac"),
        "{msg}"
    );

    e.emu.push_fault(fault(403, Some("ForbiddenByFirewall"), 1));
    let err = e.client.get_secret(&e.vault, "a", None).await.unwrap_err();
    assert!(
        matches!(err, VaultError::Firewall { .. }),
        "{}",
        clean(&err)
    );

    e.emu.set_version_enabled("a", &version, false);
    let err = e.client.get_secret(&e.vault, "a", None).await.unwrap_err();
    assert!(
        matches!(err, VaultError::Disabled { .. }),
        "{}",
        clean(&err)
    );

    let err = e
        .client
        .get_secret(&e.vault, "missing", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VaultError::NotFound { .. }),
        "{}",
        clean(&err)
    );
    let bogus = "0123456789abcdef0123456789abcdef";
    let err = e
        .client
        .get_secret(&e.vault, "a", Some(bogus))
        .await
        .unwrap_err();
    let msg = clean(&err);
    assert!(
        matches!(err, VaultError::NotFound { .. }) && msg.contains(bogus),
        "{msg}"
    );
}

#[tokio::test]
async fn throttled_with_retry_after_waits_then_succeeds() {
    let e = start().await;
    e.emu.set_secret("a", "v4lue");
    // Warm the token so only the Key Vault legs are timed.
    e.client.get_secret(&e.vault, "a", None).await.unwrap();
    e.emu.push_fault(Fault {
        retry_after: Some(1),
        ..fault(429, None, 1)
    });
    let started = std::time::Instant::now();
    e.client.get_secret(&e.vault, "a", None).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After ignored"
    );
    assert_eq!(e.emu.counters().kv_requests, 3);
}

#[tokio::test]
async fn server_errors_and_hangs_are_retried_and_bounded() {
    let e = start_with_timeout(Duration::from_millis(500)).await;
    e.emu.set_secret("a", "v4lue");
    e.emu.push_fault(fault(503, None, 2));
    e.client.get_secret(&e.vault, "a", None).await.unwrap();
    e.emu.push_fault(Fault::hang(Service::KeyVault, 1));
    e.client.get_secret(&e.vault, "a", None).await.unwrap();
    e.emu.push_fault(fault(500, None, 10));
    let err = e.client.get_secret(&e.vault, "a", None).await.unwrap_err();
    assert!(
        matches!(err, VaultError::Status { status: 500, .. }),
        "{}",
        clean(&err)
    );
    assert_eq!(e.emu.pending_faults(), 1, "exactly 4 attempts");
    e.emu.clear_faults();
    e.emu.push_fault(Fault::hang(Service::KeyVault, 4));
    let err = e.client.get_secret(&e.vault, "a", None).await.unwrap_err();
    assert!(
        matches!(err, VaultError::Transport { .. }),
        "{}",
        clean(&err)
    );
}

#[tokio::test]
async fn list_pages_through_the_vault() {
    let e = start().await;
    for i in 0..30 {
        e.emu.set_secret(&format!("s{i:02}"), "v4lue");
    }
    let items = e.client.list_secrets(&e.vault).await.unwrap();
    assert_eq!(items.len(), 30);
    assert!(items.iter().all(|i| i.enabled && i.updated.is_some()));
    assert!(e.emu.counters().kv_lists >= 2);
    e.emu.push_fault(Fault {
        path_contains: Some("/secrets".into()),
        ..fault(403, Some("ForbiddenByRbac"), 1)
    });
    let err = e.client.list_secrets(&e.vault).await.unwrap_err();
    assert!(
        matches!(err, VaultError::ListForbidden { .. }),
        "{}",
        clean(&err)
    );
}
