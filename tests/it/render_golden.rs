//! Golden render tests: `tests/golden/NN_name.tera` renders to `NN_name.out`,
//! or fails with exactly the text of `NN_name.err` (every error of the
//! template, one per line, with the golden directory shown as
//! `tests/golden`). `KVSYNC_BLESS=1` rewrites the expected files.
//!
//! Every template in the repository's `templates/` is also compiled and
//! rendered against a synthetic context.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kvsync::certs::CertMaterial;
use kvsync::config::{
    AgentConfig, AuthConfig, AuthMethod, Config, FileSource, FileSpec, OutputFormat, SecretKind,
    SecretSpec, TlsConfig,
};
use kvsync::render::{Context, RenderError, Renderer};
use kvsync::vault::SecretBundle;
use secrecy::SecretString;

/// Planted in secrets; must never appear in an error.
const CANARY: &str = "CANARY-7f3a9c-do-not-leak";
const DB_PASSWORD: &str = r"s3cr:et\pw";
const PFX_B64: &str = "AAECAwQFBgcICQ==";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n";
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nTEVBRg==\n-----END CERTIFICATE-----\n";
const CHAIN_PEM: &str = "-----BEGIN CERTIFICATE-----\nSU5U\n-----END CERTIFICATE-----\n";

/// (alias, kind, value)
const SECRETS: &[(&str, SecretKind, &str)] = &[
    ("db", SecretKind::Secret, DB_PASSWORD),
    ("canary", SecretKind::Secret, CANARY),
    ("html", SecretKind::Secret, r#"<a href="x">&'</a>"#),
    ("b64", SecretKind::Secret, "aMOpbGxvOndvcmxk"),
    (
        "json",
        SecretKind::Secret,
        r#"{"user":"app","port":5432,"pass":"CANARY-7f3a9c-do-not-leak"}"#,
    ),
    ("shell", SecretKind::Secret, "it's $HOME `id`"),
    ("multi", SecretKind::Secret, "line1\nline2 \"q\" \\ $X"),
    ("plain", SecretKind::Secret, "p"),
    ("site", SecretKind::Certificate, PFX_B64),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn config(files: Vec<FileSpec>, secrets: &[(&str, SecretKind)]) -> Config {
    let vault = url::Url::parse("https://golden.vault.azure.net").unwrap();
    Config {
        source: PathBuf::from("/etc/kvsync/kvsync.toml"),
        base_dir: PathBuf::from("/etc/kvsync"),
        vault: Some(vault.clone().into()),
        agent: AgentConfig {
            interval: Duration::from_secs(600),
            jitter: Duration::from_secs(30),
            templates_dir: golden_dir(),
            log_format: None,
            listen: None,
            deadline: Duration::from_secs(120),
            concurrency: 8,
            hook_timeout: Duration::from_secs(30),
            cert_expiry_warning: kvsync::config::DEFAULT_CERT_EXPIRY_WARNING,
            keep_going: false,
            once_wait: None,
            allow_remote_sync: false,
        },
        auth: AuthConfig::with_method(AuthMethod::Auto),
        tls: TlsConfig::default(),
        secrets: secrets
            .iter()
            .map(|(alias, kind)| {
                let spec = SecretSpec {
                    alias: alias.to_string(),
                    name: format!("kv-{alias}"),
                    version: None,
                    vault: vault.clone().into(),
                    kind: *kind,
                    include_root: false,
                    optional: false,
                    default: String::new(),
                    public_only: false,
                };
                (alias.to_string(), spec)
            })
            .collect(),
        selections: Default::default(),
        files,
        stores: Vec::new(),
        env: Vec::new(),
        exec: kvsync::config::ExecConfig::default(),
        fanouts: Vec::new(),
    }
}

fn file(dest: &str, source: FileSource) -> FileSpec {
    FileSpec {
        path: PathBuf::from(dest),
        source,
        mode: 0o600,
        owner: None,
        group: None,
        dir_mode: 0o755,
        acl: Vec::new(),
        on_change: None,
        pfx_password: None,
        pfx_legacy: false,
        verify: None,
        rollback: false,
        follow_symlinks: false,
        decode: None,
    }
}

fn bundle(alias: &str, value: &str) -> SecretBundle {
    let full = alias != "plain";
    SecretBundle {
        value: SecretString::from(value.to_string()),
        name: format!("kv-{alias}"),
        version: "0123456789abcdef0123456789abcdef".into(),
        id: format!(
            "https://golden.vault.azure.net/secrets/kv-{alias}/0123456789abcdef0123456789abcdef"
        ),
        content_type: full.then(|| "text/plain".to_string()),
        tags: if full {
            BTreeMap::from([("env".to_string(), "prod".to_string())])
        } else {
            BTreeMap::new()
        },
        enabled: true,
        created: Some(1_700_000_000),
        updated: full.then_some(1_700_000_000),
        not_before: None,
        expires: full.then_some(1_767_225_600),
        kid: None,
        managed: false,
    }
}

fn cert() -> CertMaterial {
    CertMaterial {
        key_pem: SecretString::from(KEY_PEM.to_string()),
        cert_pem: CERT_PEM.into(),
        chain_pem: CHAIN_PEM.into(),
        fullchain_pem: format!("{CERT_PEM}{CHAIN_PEM}"),
        pfx_base64: SecretString::from(PFX_B64.to_string()),
        thumbprint: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
        not_after: "2026-01-01T00:00:00Z".into(),
        subject: "CN=www.example.test".into(),
        sans: vec!["www.example.test".into(), "example.test".into()],
        serial: "0a1b".into(),
        issuer: "CN=Example Issuing CA".into(),
        // 2026-01-01T00:00:00Z, as `not_after`.
        not_after_unix: 1_767_225_600,
        key_algorithm: "EC P-256".into(),
        leaf_der: Vec::new(),
        chain_der: Vec::new(),
    }
}

fn context() -> Context {
    let mut ctx = Context::default();
    for (alias, kind, value) in SECRETS {
        ctx.secrets.insert(alias.to_string(), bundle(alias, value));
        if *kind == SecretKind::Certificate {
            ctx.certs.insert(alias.to_string(), cert());
        }
    }
    ctx.instance = Some(serde_json::json!({
        "name": "web-01", "location": "westeurope", "resourceGroupName": "rg-web",
        "subscriptionId": "00000000-0000-0000-0000-000000000000", "tags": "role:web"
    }));
    ctx
}

fn all_secrets() -> Vec<(&'static str, SecretKind)> {
    SECRETS.iter().map(|(a, k, _)| (*a, *k)).collect()
}

fn show(errors: &[RenderError]) -> String {
    let dir = golden_dir().display().to_string();
    let lines: Vec<String> = errors
        .iter()
        .map(|e| e.to_string().replace(&dir, "tests/golden"))
        .collect();
    lines.join("\n") + "\n"
}

fn assert_no_secret(text: &str) {
    for (alias, _, value) in SECRETS {
        // One-letter values ("p") occur in any English text.
        if value.len() > 3 {
            assert!(
                !text.contains(value),
                "secret `{alias}` leaked into: {text}"
            );
        }
    }
    for s in [CANARY, "5432", KEY_PEM, PFX_B64, "héllo"] {
        assert!(!text.contains(s), "`{s}` leaked into: {text}");
    }
}

/// Render one golden template; Ok(output) or Err(error text).
fn run_golden(tera: &Path) -> Result<String, String> {
    let stem = tera.file_stem().unwrap().to_string_lossy().into_owned();
    let cfg = config(
        vec![file(
            &format!("/dest/{stem}"),
            FileSource::Template(tera.to_path_buf()),
        )],
        &all_secrets(),
    );
    let renderer = Renderer::compile(&cfg).map_err(|e| show(&e))?;
    let out = renderer.render(0, &context()).map_err(|e| show(&[e]))?;
    Ok(String::from_utf8(out.expose().to_vec()).unwrap())
}

#[test]
fn golden_templates() {
    let bless = std::env::var_os("KVSYNC_BLESS").is_some();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tera"))
        .collect();
    entries.sort();
    assert!(entries.len() >= 10, "golden templates missing");
    let mut failures = Vec::new();
    for tera in &entries {
        let (got, ext) = match run_golden(tera) {
            Ok(out) => (out, "out"),
            Err(err) => {
                assert_no_secret(&err);
                (err, "err")
            }
        };
        let expected_path = tera.with_extension(ext);
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == got => {}
            Ok(expected) => failures.push(format!(
                "{}:\n--- expected\n{expected}\n--- got\n{got}",
                expected_path.display()
            )),
            Err(_) => failures.push(format!(
                "{}: missing (the template produced .{ext}):\n{got}",
                expected_path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn compile_reports_every_error_at_once_across_files() {
    let cfg = config(
        vec![
            file("/dest/a", FileSource::Inline("{{ secrets.nope }}".into())),
            file(
                "/dest/b",
                FileSource::Inline("{{ x | no_such_filter }}".into()),
            ),
            file(
                "/dest/c",
                FileSource::Object {
                    alias: "db".into(),
                    format: OutputFormat::Pfx,
                },
            ),
            file(
                "/dest/d",
                FileSource::Template("/nonexistent/t.tera".into()),
            ),
        ],
        &all_secrets(),
    );
    let errors = Renderer::compile(&cfg).err().expect("must fail");
    let text = show(&errors);
    assert_eq!(errors.len(), 4, "{text}");
    for dest in ["/dest/a", "/dest/b", "/dest/c", "/dest/d"] {
        assert!(text.contains(dest), "{text}");
    }
}

#[test]
fn objects_render_raw_pem_and_pfx() {
    let obj = |dest: &str, alias: &str, format| {
        file(
            dest,
            FileSource::Object {
                alias: alias.into(),
                format,
            },
        )
    };
    let cfg = config(
        vec![
            obj("/o/raw", "db", OutputFormat::Raw),
            obj("/o/pem", "site", OutputFormat::Pem),
            obj("/o/key", "site", OutputFormat::Key),
            obj("/o/cert", "site", OutputFormat::Cert),
            obj("/o/chain", "site", OutputFormat::Chain),
            obj("/o/full", "site", OutputFormat::Fullchain),
            obj("/o/pfx", "site", OutputFormat::Pfx),
        ],
        &all_secrets(),
    );
    let r = Renderer::compile(&cfg).unwrap();
    let ctx = context();
    let out = |i| r.render(i, &ctx).unwrap().expose().to_vec();
    assert_eq!(out(0), DB_PASSWORD.as_bytes());
    assert_eq!(out(1), format!("{KEY_PEM}{CERT_PEM}{CHAIN_PEM}").as_bytes());
    assert_eq!(out(2), KEY_PEM.as_bytes());
    assert_eq!(out(3), CERT_PEM.as_bytes());
    assert_eq!(out(4), CHAIN_PEM.as_bytes());
    assert_eq!(out(5), format!("{CERT_PEM}{CHAIN_PEM}").as_bytes());
    assert_eq!(out(6), (0u8..10).collect::<Vec<u8>>());
    assert!(!r.uses_instance());
}

#[test]
fn uses_instance_is_detected() {
    let cfg = config(
        vec![file("/d", FileSource::Inline("{{ instance.name }}".into()))],
        &all_secrets(),
    );
    assert!(Renderer::compile(&cfg).unwrap().uses_instance());
}

#[test]
fn render_error_scrubs_derived_values() {
    // The JSON leaf equal to the canary, and the number, must not leak.
    let cfg = config(
        vec![file(
            "/d",
            FileSource::Inline(
                "{% set j = secrets.json | json_decode %}{{ j.pass | int }}{{ j.port ~ 1 | int }}"
                    .into(),
            ),
        )],
        &all_secrets(),
    );
    let r = Renderer::compile(&cfg).unwrap();
    let e = r.render(0, &context()).unwrap_err();
    assert_no_secret(&e.to_string());
    assert_eq!(e.line, Some(1));
}

/// Every template shipped in `templates/` compiles and renders against a
/// context that declares each alias it refers to.
#[test]
fn shipped_templates_render() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let mut kinds: BTreeMap<String, SecretKind> = BTreeMap::new();
        for r in kvsync::render::refs::scan(&source) {
            let kind = if r.root == kvsync::render::refs::Root::Certs {
                SecretKind::Certificate
            } else {
                SecretKind::Secret
            };
            let k = kinds.entry(r.alias).or_insert(kind);
            if kind == SecretKind::Certificate {
                *k = kind;
            }
        }
        let declared: Vec<(&str, SecretKind)> =
            kinds.iter().map(|(a, k)| (a.as_str(), *k)).collect();
        let cfg = config(
            vec![file("/dest", FileSource::Template(path.clone()))],
            &declared,
        );
        let r =
            Renderer::compile(&cfg).unwrap_or_else(|e| panic!("{}: {}", path.display(), show(&e)));
        let mut ctx = context();
        for (alias, kind) in &kinds {
            ctx.secrets
                .insert(alias.clone(), bundle(alias, "dummy-value"));
            if *kind == SecretKind::Certificate {
                ctx.certs.insert(alias.clone(), cert());
            }
        }
        // Values are synthetic: a filter may reject them (json_decode of a
        // non-JSON dummy), but nothing else may fail.
        if let Err(e) = r.render(0, &ctx) {
            assert!(e.message.contains("filter `"), "{}: {e}", path.display());
        }
    }
}

/// Every config in `config/` compiles (its templates taken from the
/// repository's `templates/` when the configured directory is not on this
/// machine) and each file renders against a synthetic context.
#[test]
fn shipped_configs_compile_and_render() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(entries) = std::fs::read_dir(root.join("config")) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let mut cfg =
            kvsync::config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for f in &mut cfg.files {
            if let FileSource::Template(t) = &mut f.source
                && !t.exists()
            {
                *t = root.join("templates").join(t.file_name().unwrap());
            }
        }
        let r =
            Renderer::compile(&cfg).unwrap_or_else(|e| panic!("{}: {}", path.display(), show(&e)));
        let mut ctx = context();
        for (alias, spec) in &cfg.secrets {
            ctx.secrets
                .insert(alias.clone(), bundle(alias, "dummy-value"));
            if spec.kind == SecretKind::Certificate {
                ctx.certs.insert(alias.clone(), cert());
            }
        }
        for i in 0..cfg.files.len() {
            if let Err(e) = r.render(i, &ctx) {
                assert!(e.message.contains("filter `"), "{}: {e}", path.display());
            }
        }
    }
}
