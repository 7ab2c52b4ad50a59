//! Azure VM IMDS, Kubernetes workload identity and `auto` selection against
//! the emulator (kvsync-fake). Loopback only: IMDS is the emulator's IMDS
//! port, never 169.254.169.254.

use std::time::Duration;

use kvsync::config::{AuthConfig, AuthMethod};
use kvsync::env::Env;
use kvsync::http::RetryPolicy;
use kvsync::identity::imds::{ImdsSource, Selector};
use kvsync::identity::workload::WorkloadSource;
use kvsync::identity::{IdentityError, TokenSource, claims};
use kvsync_fake::{Emulator, Fault, Options, Service, UserAssigned, WorkloadApp};
use secrecy::ExposeSecret;
use url::Url;

const AUDIENCE: &str = "https://vault.azure.net";

fn auth(method: AuthMethod) -> AuthConfig {
    AuthConfig::with_method(method)
}

/// A loopback URL on which nothing listens (connections refused).
async fn closed_port() -> Url {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    Url::parse(&format!("http://{addr}")).unwrap()
}

/// A 410 schedule shaped like production (fixed interval, bounded window),
/// in milliseconds.
fn short_gone(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(5),
        total: Duration::from_secs(2),
        max_retry_after: Duration::from_millis(5),
    }
}

fn imds(emu: &Emulator, sel: Option<Selector>) -> ImdsSource {
    ImdsSource::new(
        Url::parse(&emu.imds_base()).unwrap(),
        sel,
        kvsync::http::metadata_client().unwrap(),
    )
    .with_retry_policies(RetryPolicy::fast_for_tests(4), short_gone(8))
}

fn uai() -> UserAssigned {
    UserAssigned {
        client_id: "c0c0c0c0-0000-0000-0000-000000000001".into(),
        object_id: "0b0b0b0b-0000-0000-0000-000000000002".into(),
        resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app".into(),
    }
}

fn claims_of(t: &kvsync::identity::AccessToken) -> claims::Claims {
    claims::decode(t.token.expose_secret()).unwrap()
}

#[tokio::test]
async fn imds_system_assigned() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let t = imds(&emu, None).fetch(AUDIENCE).await.unwrap();
    let c = claims_of(&t);
    assert_eq!(c.oid.as_deref(), Some(emu.identity().object_id.as_str()));
    assert_eq!(c.aud.as_deref(), Some(AUDIENCE));
    assert_eq!(emu.counters().imds_requests, 1);
    assert_eq!(emu.counters().himds_requests, 0);
}

#[tokio::test]
async fn imds_user_assigned_by_each_selector() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let u = uai();
    emu.add_user_assigned(u.clone());
    for sel in [
        Selector::ClientId(u.client_id.clone()),
        Selector::ObjectId(u.object_id.clone()),
        Selector::ResourceId(u.resource_id.clone()),
    ] {
        let t = imds(&emu, Some(sel.clone())).fetch(AUDIENCE).await.unwrap();
        let c = claims_of(&t);
        assert_eq!(c.oid.as_deref(), Some(u.object_id.as_str()), "{sel}");
        assert_eq!(c.appid.as_deref(), Some(u.client_id.as_str()), "{sel}");
    }
}

#[tokio::test]
async fn imds_unassigned_identity_is_400_not_retried() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let err = imds(&emu, Some(Selector::ClientId("not-mine".into())))
        .fetch(AUDIENCE)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, IdentityError::Status { status: 400, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("client_id=not-mine") && msg.contains("not assigned"),
        "{msg}"
    );
    assert_eq!(emu.counters().imds_requests, 1);
    // Two selectors cannot even be expressed (config load refuses them);
    // the one configured is the one used.
    let mut a = auth(AuthMethod::Imds);
    a.user_assigned = Some(Selector::ObjectId("b".into()));
    assert_eq!(
        Selector::from_auth(&a),
        Some(Selector::ObjectId("b".into()))
    );
    let toml =
        "vault = \"https://v.vault.azure.net\"\n[auth]\nclient_id = \"a\"\nobject_id = \"b\"\n";
    let e = kvsync::config::parse(toml, std::path::Path::new("/k.toml")).unwrap_err();
    assert!(
        e.to_string()
            .contains("at most one of client_id, object_id, resource_id"),
        "{e}"
    );
}

#[tokio::test]
async fn imds_410_at_boot_is_retried_within_the_window() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    emu.push_fault(Fault {
        service: Service::Imds,
        status: 410,
        times: 5,
        ..Fault::default()
    });
    let t = imds(&emu, None).fetch(AUDIENCE).await.unwrap();
    assert!(claims_of(&t).oid.is_some());
    assert_eq!(emu.counters().imds_requests, 6);
    // Longer than the window: the 410 is reported, the loop is bounded.
    emu.reset_counters();
    emu.push_fault(Fault {
        service: Service::Imds,
        status: 410,
        times: 100,
        ..Fault::default()
    });
    let err = imds(&emu, None).fetch(AUDIENCE).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::Status { status: 410, .. }),
        "{err}"
    );
    assert_eq!(emu.counters().imds_requests, 8);
}

#[tokio::test]
async fn imds_429_and_5xx_retried_other_4xx_not() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    for status in [429, 500, 503] {
        emu.push_fault(Fault {
            service: Service::Imds,
            status,
            ..Fault::default()
        });
    }
    imds(&emu, None).fetch(AUDIENCE).await.unwrap();
    assert_eq!(emu.counters().imds_requests, 4);
    emu.reset_counters();
    emu.push_fault(Fault {
        service: Service::Imds,
        status: 403,
        times: 3,
        ..Fault::default()
    });
    let err = imds(&emu, None).fetch(AUDIENCE).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::Status { status: 403, .. }),
        "{err}"
    );
    assert_eq!(emu.counters().imds_requests, 1);
}

fn workload_env(emu: &Emulator, file: &std::path::Path) -> Env {
    let app = emu.workload_app();
    Env::empty()
        .with("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string())
        .with("AZURE_TENANT_ID", app.tenant_id)
        .with("AZURE_CLIENT_ID", app.client_id)
        .with("AZURE_AUTHORITY_HOST", emu.login_url())
}

fn remote(emu: &Emulator) -> reqwest::Client {
    kvsync::http::vault_client(&Env::empty(), Some(emu.ca_file())).unwrap()
}

fn expect_assertion(emu: &Emulator, assertion: &str) {
    emu.set_workload_app(WorkloadApp {
        expected_assertion: Some(assertion.to_owned()),
        ..emu.workload_app()
    });
}

#[tokio::test]
async fn workload_identity_rereads_a_rotated_token_file() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "sa-token-1\n").unwrap();
    expect_assertion(&emu, "sa-token-1");
    let env = workload_env(&emu, &file);
    let src = WorkloadSource::from_config(&auth(AuthMethod::WorkloadIdentity), &env, remote(&emu))
        .unwrap()
        .with_retry_policy(RetryPolicy::fast_for_tests(3));
    let t = src.fetch(AUDIENCE).await.unwrap();
    let c = claims_of(&t);
    assert_eq!(
        c.appid.as_deref(),
        Some(emu.workload_app().client_id.as_str())
    );
    assert_eq!(c.aud.as_deref(), Some(AUDIENCE));
    // The kubelet rotates the file; Entra now accepts only the new one.
    std::fs::write(&file, "sa-token-2").unwrap();
    expect_assertion(&emu, "sa-token-2");
    src.fetch(AUDIENCE).await.unwrap();
    // A stale file is refused with the AADSTS code, not the assertion.
    std::fs::write(&file, "sa-token-1").unwrap();
    let err = src.fetch(AUDIENCE).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("AADSTS70021"), "{msg}");
    assert!(!msg.contains("sa-token"), "{msg}");
    assert_eq!(emu.counters().login_requests, 3);
}

#[tokio::test]
async fn workload_identity_wrong_client_id() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "sa").unwrap();
    expect_assertion(&emu, "sa");
    let env = workload_env(&emu, &file).with("AZURE_CLIENT_ID", "someone-else");
    let src = WorkloadSource::from_config(&auth(AuthMethod::WorkloadIdentity), &env, remote(&emu))
        .unwrap();
    let msg = src.fetch(AUDIENCE).await.unwrap_err().to_string();
    assert!(
        msg.contains("AADSTS700016") && msg.contains("AZURE_CLIENT_ID"),
        "{msg}"
    );
    assert_eq!(emu.counters().login_requests, 1);
}

// ---- `auto` ----

fn select(a: &AuthConfig, env: &Env, emu: &Emulator) -> std::sync::Arc<dyn TokenSource> {
    kvsync::identity::select(
        a,
        env,
        kvsync::http::metadata_client().unwrap(),
        remote(emu),
    )
    .unwrap()
}

#[tokio::test]
async fn auto_with_arc_env_chooses_arc() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(Options::default()).await.unwrap();
    let mut a = auth(AuthMethod::Auto);
    a.imds_endpoint = Some(Url::parse(&emu.imds_base()).unwrap());
    a.test_arc_token_dir = Some(emu.token_dir().to_owned());
    let env = Env::empty()
        .with("IDENTITY_ENDPOINT", emu.himds_token_endpoint())
        .with("IMDS_ENDPOINT", emu.himds_base());
    let src = select(&a, &env, &emu);
    assert_eq!(src.info().kind, "arc");
    src.fetch(AUDIENCE).await.unwrap();
    assert_eq!(emu.counters().imds_requests, 0);
    assert!(emu.counters().himds_requests >= 2);
    // Arc with a user-assigned selector is refused, never ignored.
    a.user_assigned = Some(Selector::ClientId("c".into()));
    let err = kvsync::identity::select(
        &a,
        &env,
        kvsync::http::metadata_client().unwrap(),
        remote(&emu),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("system-assigned"), "{err}");
}

#[tokio::test]
async fn auto_with_only_imds_reachable_chooses_imds() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(Options::default()).await.unwrap();
    let mut a = auth(AuthMethod::Auto);
    a.imds_endpoint = Some(Url::parse(&emu.imds_base()).unwrap());
    let src = select(&a, &Env::empty(), &emu);
    src.fetch(AUDIENCE).await.unwrap();
    assert_eq!(src.info().kind, "imds");
    // One probe, one token request; the choice is kept.
    src.fetch(AUDIENCE).await.unwrap();
    assert_eq!(emu.counters().imds_requests, 3);
    assert_eq!(emu.counters().himds_requests, 0);
}

#[tokio::test]
async fn auto_with_only_workload_env_chooses_workload_identity() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "sa").unwrap();
    expect_assertion(&emu, "sa");
    let mut a = auth(AuthMethod::Auto);
    a.imds_endpoint = Some(closed_port().await);
    let src = select(&a, &workload_env(&emu, &file), &emu);
    src.fetch(AUDIENCE).await.unwrap();
    assert_eq!(src.info().kind, "workload-identity");
    assert_eq!(emu.counters().login_requests, 1);
}

#[tokio::test]
async fn auto_with_nothing_usable_lists_every_source() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(Options::default()).await.unwrap();
    let mut a = auth(AuthMethod::Auto);
    let closed = closed_port().await;
    a.imds_endpoint = Some(closed.clone());
    let src = select(&a, &Env::empty(), &emu);
    let err = src.fetch(AUDIENCE).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IdentityError::NoneUsable(_)), "{msg}");
    let lines: Vec<&str> = msg.lines().collect();
    assert!(lines.len() >= 4, "{msg}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("arc:") && l.contains("IDENTITY_ENDPOINT")),
        "{msg}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("imds:") && l.contains(closed.as_str())),
        "{msg}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("workload-identity:") && l.contains("AZURE_FEDERATED_TOKEN_FILE")),
        "{msg}"
    );
    // Workload env incomplete: the missing variable is named.
    let env = Env::empty().with("AZURE_FEDERATED_TOKEN_FILE", "/x");
    let msg = select(&a, &env, &emu)
        .fetch(AUDIENCE)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("AZURE_TENANT_ID"), "{msg}");
}

#[tokio::test]
async fn explicit_method_uses_only_that_source() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = Emulator::start(Options::default()).await.unwrap();
    let mut a = auth(AuthMethod::Imds);
    a.imds_endpoint = Some(Url::parse(&emu.imds_base()).unwrap());
    // Arc env present, but imds was asked for.
    let env = Env::empty()
        .with("IDENTITY_ENDPOINT", emu.himds_token_endpoint())
        .with("IMDS_ENDPOINT", emu.himds_base());
    let src = select(&a, &env, &emu);
    assert_eq!(src.info().kind, "imds");
    src.fetch(AUDIENCE).await.unwrap();
    assert_eq!(emu.counters().himds_requests, 0);
    assert_eq!(emu.counters().imds_requests, 1);
}
