//! End-to-end tests with real servers from Debian packages on loopback:
//! PostgreSQL (a pgpass rendered from the emulator's secret, through a
//! password rotation) and nginx (a certificate issued by the emulator,
//! rendered as key + full chain, served, rotated, reloaded by the hook).
//!
//! They need root and the packages; without them they SKIP loudly, or fail
//! when `KVSYNC_E2E_REQUIRED` is set (CI). See tests/e2e/mod.rs.

use std::path::Path;

use crate::support::e2e::{self, postgres::Postgres};
use crate::support::harness::{Harness, mode, read, stderr, stdout};

/// Role password before and after rotation. Both contain `:` and `\` so
/// the pgpass escaping is exercised (an unescaped `:` would split the line
/// into the wrong fields; an unescaped `\` would be eaten).
const PG_PASSWORD_1: &str = r"e2e:old\pa$s-7c1f";
const PG_PASSWORD_2: &str = r"e2e:new\\pa:ss-93ab";
/// Key Vault secret holding the role password.
const PG_SECRET: &str = "app-db-password";

/// libpq's pgpass escaping, written out independently of kvsync's filter.
fn pgpass_escaped(s: &str) -> String {
    s.replace('\\', r"\\").replace(':', r"\:")
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn recipe(path: &str) -> String {
    read(&Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
}

/// The deploy/postgresql recipe's config body (secrets + file) pointed at
/// the scratch dir, its template with the cluster's port.
fn pgpass_config(h: &Harness, port: u16) -> std::path::PathBuf {
    let tdir = h.path("templates");
    std::fs::create_dir_all(&tdir).unwrap();
    let template = recipe("deploy/postgresql/templates/pgpass.tera");
    assert!(
        template.contains(":5432:"),
        "recipe template names port 5432"
    );
    std::fs::write(
        tdir.join("pgpass.tera"),
        template.replace(":5432:", &format!(":{port}:")),
    )
    .unwrap();
    h.write_config(&format!(
        r#"
[agent]
templates_dir = "{tdir}"

[secrets]
db_password = "{PG_SECRET}"

[[file]]
path = "{out}"
template = "pgpass.tera"
mode = "0600"
"#,
        tdir = tdir.display(),
        out = h.path("home/.pgpass").display(),
    ))
}

async fn assert_connects(pg: &Postgres, pgpass: &Path) {
    let o = pg.connect("app", "appdb", pgpass).await;
    assert!(
        o.status.success(),
        "psql with {} failed: {}",
        pgpass.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "app");
}

async fn once_ok(h: &Harness, config: &Path, secret_values: &[&str]) {
    let o = h.once(config, &[]).await;
    assert!(o.status.success(), "kvsync once: {}", stderr(&o));
    for v in secret_values {
        assert!(
            !stdout(&o).contains(v) && !stderr(&o).contains(v),
            "secret leaked in output"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pgpass_follows_rotation() {
    if !e2e::gate("postgres_pgpass_follows_rotation", e2e::postgres::missing()) {
        return;
    }
    let pg = Postgres::start().await;
    pg.sql(&format!(
        "CREATE ROLE app LOGIN PASSWORD {};\nCREATE DATABASE appdb OWNER app;\n",
        sql_literal(PG_PASSWORD_1)
    ))
    .await;

    let h = Harness::new().await;
    h.emu.set_secret(PG_SECRET, PG_PASSWORD_1);
    let config = pgpass_config(&h, pg.port);
    let pgpass = h.path("home/.pgpass");
    assert!(
        !read(&config).contains(PG_PASSWORD_1),
        "the password lives only in the vault"
    );

    once_ok(&h, &config, &[PG_PASSWORD_1]).await;
    assert_eq!(
        mode(&pgpass),
        0o600,
        "libpq ignores a group/world-readable pgpass"
    );
    let line = format!(
        "127.0.0.1:{}:appdb:app:{}",
        pg.port,
        pgpass_escaped(PG_PASSWORD_1)
    );
    assert!(read(&pgpass).lines().any(|l| l == line), "{line} in pgpass");
    assert_connects(&pg, &pgpass).await;

    // Rotate: the role's password in PostgreSQL and a new secret version.
    let old = h.path("old.pgpass");
    std::fs::copy(&pgpass, &old).unwrap();
    pg.sql(&format!(
        "ALTER ROLE app PASSWORD {};\n",
        sql_literal(PG_PASSWORD_2)
    ))
    .await;
    h.emu.set_secret(PG_SECRET, PG_PASSWORD_2);
    once_ok(&h, &config, &[PG_PASSWORD_1, PG_PASSWORD_2]).await;

    assert_eq!(mode(&pgpass), 0o600);
    assert!(read(&pgpass).contains(&pgpass_escaped(PG_PASSWORD_2)));
    assert_connects(&pg, &pgpass).await;
    // The rotation was real: the previous file no longer gets in.
    let o = pg.connect("app", "appdb", &old).await;
    assert!(!o.status.success(), "old pgpass still connects");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
}

// ---------------------------------------------------------------- nginx ---

use crate::support::e2e::nginx::Nginx;
use crate::support::e2e::tls_client::{self, normalize_serial};

/// Bound on how long a reload may take to show in what nginx serves. nginx
/// applies `-s reload` asynchronously (the master re-reads its config, starts
/// new workers, and old workers finish what they accepted); there is no
/// event a client can await, so we poll with short steps up to this bound.
const RELOAD_VISIBLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);
const RELOAD_POLL_STEP: std::time::Duration = std::time::Duration::from_millis(50);

/// Poll (bounded) until nginx serves a leaf with `serial`; returns what was
/// served last on timeout (panics with it).
async fn wait_for_serial(n: &Nginx, root_pem: &str, serial: &str) {
    let want = normalize_serial(serial);
    let deadline = tokio::time::Instant::now() + RELOAD_VISIBLE_WITHIN;
    loop {
        let got = tls_client::fetch(n.port, root_pem).await;
        match &got {
            Ok(s) if s.serial == want => {
                assert!(s.status_line.contains(" 200 "), "{}", s.status_line);
                return;
            }
            _ if tokio::time::Instant::now() >= deadline => panic!(
                "nginx did not serve serial {want} within {RELOAD_VISIBLE_WITHIN:?}; last: {got:?}\n{}",
                n.logs()
            ),
            _ => tokio::time::sleep(RELOAD_POLL_STEP).await,
        }
    }
}

/// A test-only CA (rcgen) issuing `localhost` leaves with chosen serials.
struct TestCa {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kvsync e2e harness root");
        let ca =
            rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    /// (cert PEM, key PEM) of a leaf with serial `serial`.
    fn leaf(&self, serial: u64) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_key_pair(n: &Nginx, cert: &str, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(n.cert_path(), cert).unwrap();
    std::fs::write(n.key_path(), key).unwrap();
    std::fs::set_permissions(n.key_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The harness itself, without kvsync: nginx serves what is on disk, a
/// reload with a key that doesn't match the certificate shows up as a
/// failure in error.log (so the kvsync test's "no failed reload" assertion
/// can fail), and a good reload becomes visible to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_harness_detects_a_failed_reload() {
    if !e2e::gate(
        "nginx_harness_detects_a_failed_reload",
        e2e::nginx::missing(),
    ) {
        return;
    }
    let ca = TestCa::new();
    let root = ca.ca.pem();
    let (cert1, key1) = ca.leaf(0x1001);
    let (cert2, key2) = ca.leaf(0x2002);
    let mut n = Nginx::prepare();
    write_key_pair(&n, &cert1, &key1);
    n.start().await;
    wait_for_serial(&n, &root, "1001").await;
    assert!(n.failures().is_empty(), "{}", n.logs());

    // Only one half rotated (what kvsync's hook groups prevent): the reload
    // fails and nginx keeps serving the old pair.
    write_key_pair(&n, &cert2, &key1);
    // (`nginx -s reload` would refuse it itself: it loads the config before
    // signalling; a bare SIGHUP is what a hook without that check amounts to.)
    n.sighup();
    let deadline = tokio::time::Instant::now() + RELOAD_VISIBLE_WITHIN;
    while n.failures().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no [emerg] logged:\n{}",
            n.logs()
        );
        tokio::time::sleep(RELOAD_POLL_STEP).await;
    }
    assert_eq!(
        normalize_serial(&tls_client::fetch(n.port, &root).await.unwrap().serial),
        "1001"
    );

    // The `-t` half of the hook refuses the mismatched pair before any signal.
    let counter = n.path("hook.count");
    let mut hook = tokio::process::Command::new("sh");
    hook.args(["-c", &n.reload_hook(&counter)]);
    assert!(
        !e2e::run(hook, None).await.status.success(),
        "nginx -t accepted a mismatched pair"
    );

    write_key_pair(&n, &cert2, &key2);
    let mut hook = tokio::process::Command::new("sh");
    hook.args(["-c", &n.reload_hook(&counter)]);
    e2e::run_ok(hook, None).await;
    wait_for_serial(&n, &root, "2002").await;
    assert_eq!(n.reloads(), 2, "{}", n.logs());
    assert_eq!(read(&counter).lines().count(), 2);

    // A client trusting another CA is refused: verification is real.
    let other = TestCa::new().ca.pem();
    let err = tls_client::fetch(n.port, &other).await.unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    n.stop().await;
}

// ------------------------------------------------- nginx + kvsync + vault ---

use kvsync_fake::{CertContentType, CertKey, CertOptions};

/// Key Vault certificate name.
const CERT_NAME: &str = "web-tls";

/// The deploy/nginx recipe's secrets + files for this nginx instance: key
/// (0600) and full chain (0644) in one hook group. `hook: None` is the
/// provisioning variant (files rendered before nginx first starts, when a
/// reload has nothing to signal).
fn nginx_config_body(n: &Nginx, hook: Option<&str>) -> String {
    let on_change = hook
        .map(|h| format!("on_change = '{h}'\n"))
        .unwrap_or_default();
    format!(
        r#"
[agent]
# Only SIGHUP triggers a round after the first one.
interval = "1h"
jitter = "0s"

[secrets]
site = {{ name = "{CERT_NAME}", type = "certificate" }}

[[file]]
path = "{key}"
contents = "{{{{ certs.site.key }}}}"
mode = "0600"
{on_change}
[[file]]
path = "{cert}"
contents = "{{{{ certs.site.fullchain }}}}"
mode = "0644"
{on_change}"#,
        key = n.key_path().display(),
        cert = n.cert_path().display(),
    )
}

fn issue(h: &Harness, content_type: CertContentType, key: CertKey) -> String {
    let opts = CertOptions {
        content_type,
        key,
        ..CertOptions::default()
    };
    h.emu
        .issue_certificate(CERT_NAME, opts)
        .expect("issue certificate")
        .serial
}

/// `key=value` field of a plain-format log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Issue (`first`), render with `kvsync once`, start nginx, run the agent,
/// rotate to (`second`), SIGHUP: nginx serves the new serial after exactly
/// one hook run and one reload, and never logged a failed reload.
async fn nginx_rotation(first: (CertContentType, CertKey), second: (CertContentType, CertKey)) {
    let h = Harness::new().await;
    let root = h.emu.cert_root_pem();
    let serial1 = issue(&h, first.0, first.1);
    let mut n = Nginx::prepare();
    let counter = n.path("hook.count");

    // First install: render before nginx's first start.
    let provision = h.path("provision.toml");
    std::fs::write(
        &provision,
        format!("{}\n{}", h.header(), nginx_config_body(&n, None)),
    )
    .unwrap();
    let o = h.once(&provision, &[]).await;
    assert!(o.status.success(), "kvsync once: {}", stderr(&o));
    assert_eq!(mode(&n.key_path()), 0o600);
    assert_eq!(mode(&n.cert_path()), 0o644);
    let chain = read(&n.cert_path());
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + intermediate:\n{chain}"
    );
    assert!(
        !chain.contains(&root),
        "the root is not part of the served chain"
    );
    n.start().await;
    wait_for_serial(&n, &root, &serial1).await;

    // The agent, with the recipe's reload hook.
    let config = h.write_config(&nginx_config_body(&n, Some(&n.reload_hook(&counter))));
    let mut agent = h.spawn_agent(&config, &[]);
    let line = agent.round().await;
    assert_eq!(
        log_field(&line, "hooks_run"),
        Some("0"),
        "nothing changed: {line}"
    );
    assert!(!counter.exists(), "no hook on an unchanged round");

    // Rotate in the vault; SIGHUP asks the agent for a round now.
    let serial2 = issue(&h, second.0, second.1);
    assert_ne!(normalize_serial(&serial1), normalize_serial(&serial2));
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let line = agent.round().await;
    assert_eq!(log_field(&line, "failures"), Some("0"), "{line}");
    assert_eq!(log_field(&line, "hooks_run"), Some("1"), "{line}");
    wait_for_serial(&n, &root, &serial2).await;

    assert_eq!(
        read(&counter).lines().count(),
        1,
        "the reload hook ran exactly once"
    );
    assert_eq!(n.reloads(), 1, "one SIGHUP reached nginx:\n{}", n.logs());
    assert!(
        n.failures().is_empty(),
        "nginx logged a failure:\n{}",
        n.logs()
    );
    assert_eq!(mode(&n.key_path()), 0o600);
    let (code, log) = agent.terminate().await;
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_rotated_certificate_pfx_rsa_then_pem_ec() {
    if !e2e::gate(
        "nginx_serves_rotated_certificate_pfx_rsa_then_pem_ec",
        e2e::nginx::missing(),
    ) {
        return;
    }
    nginx_rotation(
        (CertContentType::Pkcs12, CertKey::Rsa2048),
        (CertContentType::Pem, CertKey::EcP256),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_rotated_certificate_pem_rsa_then_pfx_ec() {
    if !e2e::gate(
        "nginx_serves_rotated_certificate_pem_rsa_then_pfx_ec",
        e2e::nginx::missing(),
    ) {
        return;
    }
    nginx_rotation(
        (CertContentType::Pem, CertKey::Rsa2048),
        (CertContentType::Pkcs12, CertKey::EcP256),
    )
    .await;
}
