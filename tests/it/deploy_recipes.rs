//! The deploy/nginx and deploy/postgresql recipes: `kvsync check` accepts
//! their configs (templates resolved relative to the config file), and the
//! properties their READMEs promise hold in the configs themselves.

use std::path::{Path, PathBuf};

use kvsync::config::{FileSource, SecretKind};

fn recipe(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn check(config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kvsync"))
        .args(["check", "-c"])
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run kvsync check")
}

#[test]
fn kvsync_check_accepts_the_recipe_configs() {
    for (rel, summary) in [
        ("deploy/nginx/kvsync.toml", "OK (1 secrets, 2 files)"),
        ("deploy/postgresql/kvsync.toml", "OK (1 secrets, 1 files)"),
        ("deploy/container/kvsync.toml", "OK (4 secrets, 2 files)"),
    ] {
        let o = check(&recipe(rel));
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "kvsync check {rel}: {out}");
        assert!(out.contains(summary), "{rel}: {out}");
    }
}

#[test]
fn nginx_recipe_writes_key_and_fullchain_in_one_hook_group() {
    let cfg = kvsync::config::load(&recipe("deploy/nginx/kvsync.toml")).unwrap();
    assert_eq!(cfg.secrets["site"].kind, SecretKind::Certificate);
    let [key, chain] = cfg.files.as_slice() else {
        panic!("two files expected")
    };
    let inline = |f: &kvsync::config::FileSpec| match &f.source {
        FileSource::Inline(s) => s.clone(),
        other => panic!("inline contents expected, got {other:?}"),
    };
    assert!(inline(key).contains("certs.site.key"));
    assert!(inline(chain).contains("certs.site.fullchain"));
    assert_eq!(key.mode, 0o600, "private key owner-only");
    assert_eq!(chain.mode, 0o644);
    assert_eq!(
        key.on_change.as_ref().and_then(|h| h.as_shell()),
        Some("nginx -t && nginx -s reload")
    );
    assert_eq!(
        key.on_change, chain.on_change,
        "one hook group: one reload per round"
    );
    // The server block names exactly these two paths.
    let site = std::fs::read_to_string(recipe("deploy/nginx/site.conf")).unwrap();
    assert!(site.contains(&format!("ssl_certificate     {};", chain.path.display())));
    assert!(site.contains(&format!("ssl_certificate_key {};", key.path.display())));
}

#[test]
fn postgresql_recipe_pgpass_is_owner_only_and_escaped() {
    let cfg = kvsync::config::load(&recipe("deploy/postgresql/kvsync.toml")).unwrap();
    let [pgpass] = cfg.files.as_slice() else {
        panic!("one file expected")
    };
    assert_eq!(
        pgpass.mode, 0o600,
        "libpq ignores a group/world-readable pgpass"
    );
    let FileSource::Template(t) = &pgpass.source else {
        panic!("template file expected")
    };
    assert_eq!(t, &recipe("deploy/postgresql/templates/pgpass.tera"));
    let text = std::fs::read_to_string(t).unwrap();
    assert!(text.contains("127.0.0.1:5432:appdb:app:{{ secrets.db_password | pgpass_escape }}"));
}

/// Issue 12: `[[store]]` is Windows-only. On Unix, `kvsync check` of the IIS
/// store recipe exits 2 with exactly one diagnostic, naming `store[0]` and
/// the line of its table; everything else in the recipe is valid.
#[test]
#[cfg(unix)]
fn check_rejects_store_on_unix_naming_key_and_line() {
    let path = recipe("deploy/windows/iis-store.toml");
    let text = std::fs::read_to_string(&path).expect("read recipe");
    let line = text
        .lines()
        .position(|l| l.trim() == "[[store]]")
        .expect("a [[store]] table")
        + 1;
    let o = check(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let diags: Vec<&str> = err.lines().filter(|l| l.contains(": store[")).collect();
    assert_eq!(diags.len(), 1, "{err}");
    assert!(
        diags[0].contains(&format!("iis-store.toml:{line}:")),
        "want line {line}: {err}"
    );
    assert!(
        diags[0].contains(
            ": store[0]: [[store]] (the Windows certificate store) is a Windows-only key"
        ),
        "{err}"
    );
    assert!(
        !err.contains(": file[") && !err.contains(": secrets."),
        "{err}"
    );
}
