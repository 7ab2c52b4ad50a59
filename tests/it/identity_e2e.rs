//! End to end with the real binary against the emulator: `kvsync whoami`
//! for each identity source, proxies (Key Vault and login through
//! HTTPS_PROXY, metadata endpoints never), and instance metadata in
//! templates and vault URLs.

use std::sync::{Arc, Mutex};

use crate::support::harness::{Harness, read, stderr, stdout};
use kvsync_fake::WorkloadApp;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Config header: `vault` line, `[auth]` body, the emulator's CA.
fn config(h: &Harness, vault_line: &str, auth: &str, body: &str) -> std::path::PathBuf {
    let text = format!(
        "{vault_line}\n\n[auth]\naudience = \"https://vault.azure.net\"\n{auth}\n\n[tls]\nca_file = \"{ca}\"\n\n{body}\n",
        ca = h.emu.ca_file().display()
    );
    let path = h.path("kvsync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn vault_line(h: &Harness) -> String {
    format!("vault = \"{}\"", h.emu.vault_url())
}

fn arc_auth(h: &Harness) -> String {
    format!(
        "method = \"arc\"\nidentity_endpoint = \"{}\"\ninsecure_test_arc_token_dir = \"{}\"",
        h.emu.himds_token_endpoint(),
        h.emu.token_dir().display()
    )
}

fn imds_auth(h: &Harness) -> String {
    format!(
        "method = \"imds\"\nimds_endpoint = \"{}\"",
        h.emu.imds_base()
    )
}

/// Workload identity: token file, env, and the emulator expecting it.
fn workload(h: &Harness) -> (String, Vec<(String, String)>) {
    let file = h.path("sa-token");
    std::fs::write(&file, "projected-sa-token").unwrap();
    h.emu.set_workload_app(WorkloadApp {
        expected_assertion: Some("projected-sa-token".into()),
        ..h.emu.workload_app()
    });
    let app = h.emu.workload_app();
    let env = vec![
        (
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            file.display().to_string(),
        ),
        ("AZURE_TENANT_ID".into(), app.tenant_id),
        ("AZURE_CLIENT_ID".into(), app.client_id),
        ("AZURE_AUTHORITY_HOST".into(), h.emu.login_url()),
    ];
    ("method = \"workload-identity\"".into(), env)
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn assert_no_token(h: &Harness, out: &std::process::Output) {
    let text = format!("{}{}", stdout(out), stderr(out));
    let tokens = h.emu.issued_tokens();
    assert!(!tokens.is_empty());
    for t in tokens {
        assert!(!text.contains(&t), "token leaked:\n{text}");
        let sig = t.rsplit('.').next().unwrap();
        assert!(!text.contains(sig), "token signature leaked:\n{text}");
    }
}

#[tokio::test]
async fn whoami_arc_shows_claims_and_instance() {
    let h = Harness::new().await;
    let cfg = config(&h, &vault_line(&h), &arc_auth(&h), "");
    let out = h
        .kvsync(&["whoami", "-c", cfg.to_str().unwrap()], &[])
        .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let id = h.emu.identity();
    assert!(
        text.contains("arc") && text.contains(&h.emu.himds_token_endpoint()),
        "{text}"
    );
    assert!(
        text.contains(&id.tenant_id) && text.contains(&id.object_id),
        "{text}"
    );
    assert!(text.contains(&id.app_id), "{text}");
    assert!(text.contains("https://vault.azure.net"), "{text}");
    assert!(
        text.contains("kvsync-fake-host") && text.contains("kvsync-rg"),
        "{text}"
    );
    assert!(text.contains("a=1") && text.contains("b=2"), "{text}");
    assert!(text.contains("token expires:"), "{text}");
    assert_no_token(&h, &out);
}

#[tokio::test]
async fn whoami_imds_json() {
    let h = Harness::new().await;
    h.emu.set_instance(json!({
        "name": "vm1", "location": "eastus", "resourceGroupName": "rg1",
        "subscriptionId": "sub1", "tags": "keyvault:kv1",
        "tagsList": [{"name": "keyvault", "value": "kv1"}],
    }));
    let cfg = config(&h, &vault_line(&h), &imds_auth(&h), "");
    let out = h
        .kvsync(&["whoami", "--json", "-c", cfg.to_str().unwrap()], &[])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["source"]["kind"], "imds");
    assert_eq!(v["object_id"], h.emu.identity().object_id.as_str());
    assert_eq!(v["instance"]["name"], "vm1");
    assert_eq!(v["instance"]["tags"]["keyvault"], "kv1");
    assert_eq!(h.emu.counters().himds_requests, 0);
    assert_no_token(&h, &out);
}

#[tokio::test]
async fn whoami_workload_identity() {
    let h = Harness::new().await;
    let (auth, env) = workload(&h);
    let cfg = config(&h, &vault_line(&h), &auth, "");
    let out = h
        .kvsync(&["whoami", "-c", cfg.to_str().unwrap()], &env_refs(&env))
        .await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let app = h.emu.workload_app();
    assert!(text.contains("workload-identity"), "{text}");
    assert!(
        text.contains(&app.client_id) && text.contains(&app.object_id),
        "{text}"
    );
    assert!(text.contains("unavailable"), "{text}");
    assert!(!text.contains("projected-sa-token"));
    assert_no_token(&h, &out);
}

#[tokio::test]
async fn whoami_with_nothing_usable_exits_1_listing_sources() {
    let h = Harness::new().await;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let auth = format!("method = \"auto\"\nimds_endpoint = \"{closed}\"");
    let cfg = config(&h, &vault_line(&h), &auth, "");
    let out = h
        .kvsync(&["whoami", "-c", cfg.to_str().unwrap()], &[])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in ["arc:", "imds:", &closed, "workload-identity:"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

// ---- Proxies ----

/// A loopback HTTP proxy: records each request line (`CONNECT host:port`
/// or an absolute-form GET) and tunnels CONNECTs.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn start_proxy() -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(tunnel(conn, log.clone()));
        }
    });
    Proxy { url, seen }
}

async fn tunnel(mut conn: tokio::net::TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    log.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    if parts.next() != Some("CONNECT") {
        let _ = conn
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    let target = parts.next().unwrap_or_default().to_owned();
    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
}

fn proxy_env(p: &Proxy) -> Vec<(String, String)> {
    [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
    ]
    .iter()
    .map(|k| (k.to_string(), p.url.clone()))
    .collect()
}

const SECRET_FILE: &str = "[secrets]\ndb = \"db-password\"\n\n[[file]]\npath = \"out/db.txt\"\ncontents = \"{{ secrets.db }}\"\n";

#[tokio::test]
async fn proxy_carries_vault_and_login_never_metadata() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", "s3cr3t");
    let proxy = start_proxy().await;
    let vault_port = h.emu.vault_addr().port();
    // IMDS: only the vault goes through the proxy.
    let cfg = config(&h, &vault_line(&h), &imds_auth(&h), SECRET_FILE);
    let mut env = proxy_env(&proxy);
    let out = h
        .kvsync(&["once", "-c", cfg.to_str().unwrap()], &env_refs(&env))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(&h.path("out/db.txt")), "s3cr3t");
    assert!(h.emu.counters().imds_requests >= 1);
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the vault did not go through the proxy");
    for line in &seen {
        assert_eq!(
            line,
            &format!("CONNECT localhost:{vault_port} HTTP/1.1"),
            "{seen:?}"
        );
    }
    // Arc: HIMDS direct too.
    proxy.seen.lock().unwrap().clear();
    let cfg = config(&h, &vault_line(&h), &arc_auth(&h), SECRET_FILE);
    let out = h
        .kvsync(&["once", "-c", cfg.to_str().unwrap()], &env_refs(&env))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    let himds = h.emu.himds_addr().port().to_string();
    assert!(seen.iter().all(|l| !l.contains(&himds)), "{seen:?}");
    // Workload identity: login and vault both through the proxy.
    proxy.seen.lock().unwrap().clear();
    let (auth, wl_env) = workload(&h);
    env.extend(wl_env);
    let cfg = config(&h, &vault_line(&h), &auth, SECRET_FILE);
    let out = h
        .kvsync(&["once", "-c", cfg.to_str().unwrap()], &env_refs(&env))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = proxy.seen.lock().unwrap().clone();
    let login = format!("CONNECT localhost:{} HTTP/1.1", h.emu.login_addr().port());
    assert!(seen.contains(&login), "{seen:?}");
    // NO_PROXY exempts a host.
    proxy.seen.lock().unwrap().clear();
    env.push(("NO_PROXY".into(), "localhost".into()));
    let out = h
        .kvsync(&["once", "-c", cfg.to_str().unwrap()], &env_refs(&env))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(proxy.seen.lock().unwrap().is_empty());
}

// ---- Instance metadata in templates and vault URLs ----

#[tokio::test]
async fn template_and_vault_url_use_instance_tags() {
    let h = Harness::new().await;
    h.emu.set_secret("db-password", "pw1");
    h.emu.set_secret("api-key", "k1");
    h.emu.set_instance(json!({
        "name": "web-01", "location": "westeurope", "resourceGroupName": "rg",
        "subscriptionId": "sub", "tags": "kvhost:localhost;env:prod",
        "tagsList": [],
    }));
    let port = h.emu.vault_addr().port();
    let vault = format!("vault = \"https://{{{{ instance.tags.kvhost }}}}:{port}\"");
    let body = format!(
        "[secrets]\ndb = \"db-password\"\napi = {{ name = \"api-key\", vault = \"https://{{{{ instance.tags.kvhost }}}}:{port}\" }}\n\n[[file]]\npath = \"out/app.env\"\ncontents = \"\"\"env={{{{ instance.tags.env }}}} host={{{{ instance.name }}}} db={{{{ secrets.db }}}} api={{{{ secrets.api }}}}\"\"\"\n"
    );
    let cfg = config(&h, &vault, &imds_auth(&h), &body);
    let check = h.kvsync(&["check", "-c", cfg.to_str().unwrap()], &[]).await;
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    // A host chosen by instance tags never receives a token for the
    // explicit audience unless [auth] audience_hosts names it (issue 13).
    let out = h.once(&cfg, &[]).await;
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no token audience"),
        "{}",
        stderr(&out)
    );
    let auth = format!("{}\naudience_hosts = [\"localhost:{port}\"]", imds_auth(&h));
    let cfg = config(&h, &vault, &auth, &body);
    let fetched_before = h.emu.request_times("/metadata/instance").len();
    let out = h.once(&cfg, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        read(&h.path("out/app.env")),
        "env=prod host=web-01 db=pw1 api=k1"
    );
    // Instance metadata fetched once for the round.
    assert_eq!(
        h.emu.request_times("/metadata/instance").len() - fetched_before,
        1
    );
    // A tag that is not a DNS name fragment is refused; nothing written.
    h.emu
        .set_instance(json!({"name": "web-01", "tags": "kvhost:evil.example/x;env:prod"}));
    std::fs::remove_file(h.path("out/app.env")).unwrap();
    let out = h.once(&cfg, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("DNS name fragment"),
        "{}",
        stderr(&out)
    );
    assert!(!h.path("out/app.env").exists());
}

#[tokio::test]
async fn invalid_vault_template_is_a_config_error() {
    let h = Harness::new().await;
    let vault = "vault = \"https://{{ secrets.x }}.vault.azure.net\"";
    let cfg = config(&h, vault, &imds_auth(&h), "");
    let out = h.kvsync(&["check", "-c", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("instance.<field>"),
        "{}",
        stderr(&out)
    );
}
