//! End-to-end tests with real servers from Debian packages on loopback:
//! PostgreSQL (a pgpass rendered from the emulator's secret, through a
//! password rotation) and nginx (a certificate issued by the emulator,
//! rendered as key + full chain, served, rotated, reloaded by the hook).
//!
//! They need root and the packages; without them they SKIP loudly, or fail
//! when `KVSYNC_E2E_REQUIRED` is set (CI). See tests/e2e/mod.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod e2e;
mod harness;

use std::path::Path;

use e2e::postgres::Postgres;
use harness::{Harness, mode, read, stderr, stdout};

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
