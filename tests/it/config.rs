//! Config loading (SPEC.md "Config file"): every invalid config names the
//! file, line, column and key; all problems are reported at once; examples in
//! config/ parse; relative paths resolve against the config's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kvsync::config::{
    self, AuthMethod, ConfigError, FileSource, LogFormat, OutputFormat, SecretKind,
};

const CFG: &str = "/etc/kvsync/kvsync.toml";
const VERSION: &str = "0F3E5A6B7C8D9E0F1A2B3C4D5E6F7A8B";

fn parse(text: &str) -> Result<config::Config, ConfigError> {
    config::parse(text, Path::new(CFG))
}

/// The error of an invalid config, as the operator sees it.
fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e,
    }
}

/// Assert one diagnostic names `key` at `line`, and its message contains
/// `needle`; returns the rendered line.
#[track_caller]
fn assert_diag(text: &str, key: &str, line: usize, needle: &str) -> String {
    let e = err(text);
    let rendered = e.to_string();
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.key == key)
        .unwrap_or_else(|| panic!("no diagnostic for key {key}:\n{rendered}"));
    assert_eq!(d.line, Some(line), "line of {key}:\n{rendered}");
    assert!(d.column.is_some(), "column of {key}:\n{rendered}");
    assert!(d.message.contains(needle), "{needle:?} not in:\n{rendered}");
    let shown = d.to_string();
    assert!(shown.starts_with(&format!("{CFG}:{line}:")), "{shown}");
    assert!(shown.contains(&format!(": {key}: ")), "{shown}");
    shown
}

const VAULT: &str = "vault = \"https://kv.vault.azure.net\"\n";

fn with_vault(rest: &str) -> String {
    format!("{VAULT}{rest}")
}

#[test]
fn unknown_key_in_agent() {
    let t = with_vault("[agent]\ninterval = \"10m\"\nintervall = \"5m\"\n");
    assert_diag(&t, "agent.intervall", 4, "unknown field `intervall`");
}

#[test]
fn unknown_top_level_key() {
    assert_diag(
        "vault = \"https://kv.vault.azure.net\"\naudience = \"x\"\n",
        "audience",
        2,
        "unknown key",
    );
}

#[test]
fn bad_duration() {
    let t = with_vault("[agent]\njitter = \"ten seconds\"\n");
    assert_diag(&t, "agent.jitter", 3, "expected a duration");
}

#[test]
fn zero_interval() {
    let t = with_vault("[agent]\ninterval = \"0s\"\n");
    assert_diag(&t, "agent.interval", 3, "greater than zero");
}

#[test]
fn concurrency_out_of_range() {
    let t = with_vault("[agent]\nconcurrency = 65\n");
    assert_diag(&t, "agent.concurrency", 3, "from 1 to 64");
}

#[test]
fn mode_as_number_says_to_quote_it() {
    let t = with_vault("[[file]]\npath = \"/x\"\ncontents = \"a\"\nmode = 600\n");
    let shown = assert_diag(&t, "file[0].mode", 5, "quote it");
    assert!(shown.contains("mode = \"0600\""), "{shown}");
}

#[test]
fn mode_with_non_octal_digit() {
    let t = with_vault("[[file]]\npath = \"/x\"\ncontents = \"a\"\nmode = \"0999\"\n");
    assert_diag(&t, "file[0].mode", 5, "octal mode");
}

#[test]
fn mode_too_large() {
    let t = with_vault("[[file]]\npath = \"/x\"\ncontents = \"a\"\nmode = \"17777\"\n");
    assert_diag(&t, "file[0].mode", 5, "octal mode");
}

#[test]
fn template_and_contents_both() {
    let t = with_vault("[[file]]\npath = \"/x\"\ntemplate = \"a.tera\"\ncontents = \"a\"\n");
    assert_diag(&t, "file[0].contents", 5, "exactly one of");
}

#[test]
fn neither_template_nor_contents() {
    let t = with_vault("[[file]]\npath = \"/x\"\n\n[[file]]\npath = \"/y\"\nmode = \"0600\"\n");
    assert_diag(
        &t,
        "file[1]",
        5,
        "exactly one of template, contents, or secret",
    );
}

#[test]
fn missing_path() {
    let t = with_vault("\n[[file]]\ncontents = \"a\"\n");
    assert_diag(&t, "file[0].path", 3, "needs path");
}

#[test]
fn path_naming_a_directory() {
    let t = with_vault("[[file]]\npath = \"/etc/nginx/\"\ncontents = \"a\"\n");
    assert_diag(&t, "file[0].path", 3, "directory");
}

#[test]
fn format_without_secret() {
    let t = with_vault("[[file]]\npath = \"/x\"\ncontents = \"a\"\nformat = \"pem\"\n");
    assert_diag(&t, "file[0].format", 5, "only with secret");
}

#[test]
fn secret_naming_undeclared_alias() {
    let t = with_vault(
        "[secrets]\ndb = \"psql\"\n\n[[file]]\npath = \"/x\"\nsecret = \"site\"\nformat = \"raw\"\n",
    );
    assert_diag(
        &t,
        "file[0].secret",
        7,
        "\"site\" is not an alias in [secrets] (declared: db)",
    );
}

#[test]
fn pem_format_needs_certificate() {
    let t = with_vault(
        "[secrets]\ndb = \"psql\"\n\n[[file]]\npath = \"/x\"\nsecret = \"db\"\nformat = \"key\"\n",
    );
    assert_diag(&t, "file[0].format", 8, "type = \"certificate\"");
}

#[test]
fn unknown_format() {
    let t = with_vault(
        "[secrets]\nc = { name = \"c\", type = \"certificate\" }\n[[file]]\npath = \"/x\"\nsecret = \"c\"\nformat = \"der\"\n",
    );
    assert_diag(&t, "file[0].format", 7, "\"pfx\"");
}

#[test]
fn http_vault_rejected() {
    assert_diag(
        "\n\nvault = \"http://kv.vault.azure.net\"\n",
        "vault",
        3,
        "https://",
    );
}

#[test]
fn vault_with_path_rejected() {
    let t = "[secrets]\na = { name = \"a\", vault = \"https://kv.vault.azure.net/secrets/a\" }\n";
    assert_diag(t, "secrets.a.vault", 2, "no path");
}

#[test]
fn unknown_vault_host_needs_audience() {
    let t = "vault = \"https://localhost:8443\"\n";
    assert_diag(t, "vault", 1, "set [auth] audience");
    let ok = "vault = \"https://localhost:8443\"\n[auth]\naudience = \"https://vault.azure.net\"\n";
    parse(ok).unwrap();
}

#[test]
fn bad_version_string() {
    let t = with_vault("[secrets]\ndb_conn = { name = \"psql-cmd\", version = \"0f3e\" }\n");
    assert_diag(&t, "secrets.db_conn.version", 3, "32 hex characters");
}

#[test]
fn bad_secret_name() {
    let t = with_vault("[secrets]\ndb = \"psql_password\"\n");
    assert_diag(&t, "secrets.db", 3, "letters, digits and dashes");
}

#[test]
fn bad_alias_name() {
    let t = with_vault("[secrets]\n\"db-password\" = \"psql-password\"\n");
    assert_diag(&t, "secrets.db-password", 3, "identifier");
}

#[test]
fn secret_table_without_name() {
    let t = with_vault("[secrets]\ndb = { version = \"0f3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b\" }\n");
    assert_diag(&t, "secrets.db", 3, "missing name");
}

#[test]
fn bad_secret_type() {
    let t = with_vault("[secrets]\nsite = { name = \"web\", type = \"cert\" }\n");
    assert_diag(&t, "secrets.site.type", 3, "\"certificate\"");
}

#[test]
fn unknown_key_in_secret_table() {
    let t = with_vault("[secrets]\nsite = { name = \"web\", kind = \"certificate\" }\n");
    assert_diag(&t, "secrets.site.kind", 3, "unknown field `kind`");
}

#[test]
fn secret_without_any_vault() {
    assert_diag(
        "[secrets]\ndb = \"psql-password\"\n",
        "secrets.db",
        2,
        "no vault",
    );
}

#[test]
fn unknown_owner_name() {
    let t =
        with_vault("[[file]]\npath = \"/x\"\ncontents = \"a\"\nowner = \"no-such-user-kvsync\"\n");
    assert_diag(
        &t,
        "file[0].owner",
        5,
        "no user named \"no-such-user-kvsync\"",
    );
}

#[test]
fn unknown_group_name() {
    let t =
        with_vault("[[file]]\npath = \"/x\"\ncontents = \"a\"\ngroup = \"no-such-group-kvsync\"\n");
    assert_diag(&t, "file[0].group", 5, "no group named");
}

#[test]
fn duplicate_destination() {
    let t = with_vault(
        "[[file]]\npath = \"/etc/a\"\ncontents = \"a\"\n[[file]]\npath = \"/etc/./b/../a\"\ncontents = \"b\"\n",
    );
    assert_diag(&t, "file[1].path", 6, "already the destination of file[0]");
}

#[test]
fn client_id_with_method_arc() {
    let t = with_vault(
        "[auth]\nmethod = \"arc\"\nclient_id = \"11111111-1111-1111-1111-111111111111\"\n",
    );
    assert_diag(
        &t,
        "auth.client_id",
        4,
        "Arc has only the system-assigned identity",
    );
}

#[test]
fn two_identity_selectors() {
    let t = with_vault("[auth]\nclient_id = \"a\"\nobject_id = \"b\"\n");
    assert_diag(
        &t,
        "auth.object_id",
        4,
        "at most one of client_id, object_id, resource_id",
    );
}

#[test]
fn unknown_auth_method() {
    let t = with_vault("[auth]\nmethod = \"msi\"\n");
    assert_diag(&t, "auth.method", 3, "\"workload-identity\"");
}

#[test]
fn http_authority_only_on_loopback() {
    let t = with_vault("[auth]\nauthority_host = \"http://login.example.com\"\n");
    assert_diag(&t, "auth.authority_host", 3, "https://");
    parse(&with_vault(
        "[auth]\nauthority_host = \"http://127.0.0.1:9999\"\n",
    ))
    .unwrap();
}

#[test]
fn bad_listen_address() {
    let t = with_vault("[agent]\nlisten = \"localhost\"\n");
    assert_diag(&t, "agent.listen", 3, "IP address and port");
}

#[test]
fn wrong_type_names_key() {
    let t = with_vault("[agent]\ninterval = 10\n");
    assert_diag(
        &t,
        "agent.interval",
        3,
        "invalid type: integer `10`, expected a string",
    );
}

#[test]
fn section_of_wrong_type() {
    assert_diag("\nagent = 5\n", "agent", 2, "expected a table");
}

#[test]
fn bad_toml_syntax() {
    let t = with_vault("[agent]\ninterval = \"10m\"\njitter = 30s\n");
    let e = err(&t);
    let d = &e.diagnostics[0];
    assert_eq!(d.line, Some(4), "{e}");
    assert!(d.message.starts_with("invalid TOML"), "{e}");
    assert!(d.key.contains("jitter") || d.key == "-", "{e}");
}

#[test]
fn bad_toml_syntax_names_key_when_known() {
    let t = with_vault("[agent]\ninterval = \"10m\n");
    let e = err(&t);
    assert_eq!(e.diagnostics[0].line, Some(3), "{e}");
    assert!(e.diagnostics[0].message.starts_with("invalid TOML"), "{e}");
}

#[test]
fn all_errors_reported_at_once() {
    let t = "\
vault = \"http://kv.vault.azure.net\"
[agent]
interval = \"soon\"
bogus = 1
jitter = 5
[auth]
method = \"arc\"
object_id = \"x\"
[secrets]
db = { name = \"psql\", version = \"zz\" }
[[file]]
path = \"/a\"
contents = \"a\"
mode = 600
[[file]]
path = \"/b\"
bogus = true
[[file]]
path = \"/c\"
secret = \"nope\"
";
    let e = err(t);
    let keys: Vec<(&str, Option<usize>)> = e
        .diagnostics
        .iter()
        .map(|d| (d.key.as_str(), d.line))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("vault", Some(1)),
            ("agent.interval", Some(3)),
            ("agent.bogus", Some(4)),
            ("agent.jitter", Some(5)),
            ("auth.object_id", Some(8)),
            ("secrets.db.version", Some(10)),
            ("file[0].mode", Some(14)),
            ("file[1]", Some(15)),
            ("file[1].bogus", Some(17)),
            ("file[2].secret", Some(20)),
        ],
        "{e}"
    );
}

#[test]
fn rendered_message_is_pinned() {
    let t = with_vault("[[file]]\npath = \"/etc/app.conf\"\ncontents = \"x\"\nmode = 644\n");
    assert_eq!(
        err(&t).to_string(),
        "/etc/kvsync/kvsync.toml:5:8: file[0].mode: expected an octal mode as a quoted string; \
         found the number 644: quote it, e.g. mode = \"0644\""
    );
}

#[test]
fn column_counts_characters() {
    let t = "# é\n[agent]\n  jitter = \"x\"\n";
    let e = err(&format!("{VAULT}{t}"));
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.key == "agent.jitter")
        .unwrap();
    assert_eq!((d.line, d.column), (Some(4), Some(12)), "{e}");
}

#[test]
fn unreadable_file_is_a_diagnostic() {
    let e = config::load(Path::new("/nonexistent/kvsync-test.toml")).unwrap_err();
    assert_eq!(e.diagnostics.len(), 1);
    assert_eq!(e.diagnostics[0].key, "-");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/kvsync-test.toml: -: cannot read"),
        "{e}"
    );
}

const FULL: &str = r#"
vault = "https://zerotrust-arc-kv.vault.azure.net"

[agent]
interval = "5m"
jitter = "10s"
templates_dir = "tpl"
log_format = "json"
listen = "127.0.0.1:9464"
deadline = "90s"
concurrency = 4
hook_timeout = "1m"

[auth]
method = "imds"
client_id = "11111111-1111-1111-1111-111111111111"
imds_endpoint = "http://127.0.0.1:40343"
audience = "https://vault.azure.net"
insecure_test_arc_token_dir = "tokens"

[tls]
ca_file = "ca.pem"

[secrets]
db_password = "psql-password"
db_conn = { name = "psql-cmd", version = "0F3E5A6B7C8D9E0F1A2B3C4D5E6F7A8B" }
pgpass = { name = "psql-pgpass", vault = "https://other.vault.azure.net" }
site = { name = "web-tls", type = "certificate" }

[[file]]
path = "out/pgpass"
template = "pgpass.tera"
mode = "600"
owner = "root"
group = 0

[[file]]
path = "/etc/nginx/tls/site.key"
contents = "{{ certs.site.key }}"
dir_mode = "0o750"
on_change = "nginx -s reload"

[[file]]
path = "/etc/ssl/site.pfx"
secret = "site"
format = "pfx"
owner = "0"

[[file]]
path = "/etc/app/token"
secret = "db_password"
"#;

#[test]
fn full_example_resolves() {
    let c = config::parse(FULL, Path::new("/srv/kv/kvsync.toml")).unwrap();
    let base = PathBuf::from("/srv/kv");
    assert_eq!(c.source, base.join("kvsync.toml"));
    assert_eq!(c.base_dir, base);
    assert_eq!(
        c.vault.as_ref().unwrap().host_str(),
        Some("zerotrust-arc-kv.vault.azure.net")
    );
    let a = &c.agent;
    assert_eq!(a.interval, Duration::from_secs(300));
    assert_eq!(a.jitter, Duration::from_secs(10));
    assert_eq!(a.templates_dir, base.join("tpl"));
    assert_eq!(a.log_format, Some(LogFormat::Json));
    assert_eq!(a.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(a.deadline, Duration::from_secs(90));
    assert_eq!(a.concurrency, 4);
    assert_eq!(a.hook_timeout, Duration::from_secs(60));
    assert_eq!(c.auth.method, AuthMethod::Imds);
    assert_eq!(
        c.auth.user_assigned,
        Some(kvsync::config::UserAssigned::ClientId(
            "11111111-1111-1111-1111-111111111111".into()
        ))
    );
    assert_eq!(
        c.auth.imds_endpoint.as_ref().unwrap().as_str(),
        "http://127.0.0.1:40343/"
    );
    assert_eq!(c.auth.audience.as_deref(), Some("https://vault.azure.net"));
    assert_eq!(c.auth.test_arc_token_dir, Some(base.join("tokens")));
    assert_eq!(c.tls.ca_file, Some(base.join("ca.pem")));

    assert_eq!(c.secrets.len(), 4);
    let conn = &c.secrets["db_conn"];
    assert_eq!(conn.name, "psql-cmd");
    assert_eq!(
        conn.version.as_deref(),
        Some(VERSION.to_ascii_lowercase().as_str())
    );
    assert_eq!(
        conn.vault.host_str(),
        Some("zerotrust-arc-kv.vault.azure.net")
    );
    assert_eq!(
        c.secrets["pgpass"].vault.host_str(),
        Some("other.vault.azure.net")
    );
    assert_eq!(c.secrets["site"].kind, SecretKind::Certificate);
    assert_eq!(c.secrets["db_password"].kind, SecretKind::Secret);
    assert_eq!(c.secrets["db_password"].version, None);

    let f = &c.files;
    assert_eq!(f.len(), 4);
    assert_eq!(f[0].path, base.join("out/pgpass"));
    assert!(matches!(&f[0].source, FileSource::Template(p) if *p == base.join("tpl/pgpass.tera")));
    assert_eq!(
        (f[0].mode, f[0].owner, f[0].group, f[0].dir_mode),
        (0o600, Some(0), Some(0), 0o755)
    );
    assert!(matches!(&f[1].source, FileSource::Inline(s) if s == "{{ certs.site.key }}"));
    assert_eq!((f[1].mode, f[1].dir_mode), (0o600, 0o750));
    assert_eq!(
        f[1].on_change.as_ref().and_then(|h| h.as_shell()),
        Some("nginx -s reload")
    );
    assert!(
        matches!(&f[2].source, FileSource::Object { alias, format: OutputFormat::Pfx } if alias == "site")
    );
    assert_eq!(f[2].owner, Some(0));
    assert!(matches!(
        &f[3].source,
        FileSource::Object {
            format: OutputFormat::Raw,
            ..
        }
    ));

    let s = config::summary(&c);
    assert!(
        s.contains("db_conn = secret psql-cmd (0f3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b)"),
        "{s}"
    );
    assert!(s.contains("inline template (20 bytes)"), "{s}");
    assert!(
        !s.contains("certs.site.key"),
        "inline contents must not be printed:\n{s}"
    );
}

#[test]
fn defaults_and_relative_paths() {
    let c = config::parse(
        "vault = \"https://kv.vault.azure.net\"\n[[file]]\npath = \"../out/f\"\ntemplate = \"sub/t.tera\"\n",
        Path::new("/opt/app/conf/kvsync.toml"),
    )
    .unwrap();
    assert_eq!(c.agent.interval, config::DEFAULT_INTERVAL);
    assert_eq!(c.agent.jitter, config::DEFAULT_JITTER);
    assert_eq!(c.agent.deadline, config::DEFAULT_DEADLINE);
    assert_eq!(c.agent.concurrency, config::DEFAULT_CONCURRENCY);
    assert_eq!(c.agent.hook_timeout, config::DEFAULT_HOOK_TIMEOUT);
    assert_eq!(
        c.agent.templates_dir,
        PathBuf::from("/opt/app/conf/templates")
    );
    assert_eq!(c.auth.method, AuthMethod::Auto);
    assert_eq!(c.files[0].path, PathBuf::from("/opt/app/out/f"));
    assert!(
        matches!(&c.files[0].source, FileSource::Template(p) if p == Path::new("/opt/app/conf/templates/sub/t.tera"))
    );
    assert_eq!((c.files[0].mode, c.files[0].dir_mode), (0o600, 0o755));
}

#[test]
fn load_makes_path_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"),
        &path,
    )
    .unwrap();
    let c = config::load(&path).unwrap();
    assert!(c.source.is_absolute());
    assert_eq!(c.base_dir, dir.path());
}

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "expected demo.toml and example.toml in {}",
        dir.display()
    );
}

#[test]
fn demo_config_values() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = config::load(&root.join("config/demo.toml")).unwrap();
    assert_eq!(
        c.vault.as_ref().unwrap().as_str(),
        "https://localhost:48443/"
    );
    assert_eq!(c.auth.method, AuthMethod::Arc);
    assert_eq!(
        c.auth.test_arc_token_dir,
        Some(root.join("demo/out/tokens"))
    );
    assert_eq!(c.tls.ca_file, Some(root.join("demo/out/ca.pem")));
    assert_eq!(c.files[0].path, root.join("demo/out/files/pgpass"));
    assert_eq!(c.files[1].mode, 0o640);
    assert!(
        matches!(&c.files[1].source, FileSource::Template(p) if *p == root.join("templates/app.env.tera"))
    );
}

#[test]
fn check_command_reports_diagnostics_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "vault = \"https://kv.vault.azure.net\"\n[agent]\nconcurrency = 0\n",
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("kvsync")
        .unwrap()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let expected = format!(
        "{}:3:15: agent.concurrency: expected an integer from 1 to 64",
        path.display()
    );
    assert_eq!(stderr.trim_end(), expected);
    assert!(out.stdout.is_empty());
}

#[test]
fn demo_summary_is_pinned() {
    let c = config::parse(
        include_str!("../../config/demo.toml"),
        Path::new("/repo/config/demo.toml"),
    )
    .unwrap();
    let s = config::summary(&c);
    let expected = "\
config:         /repo/config/demo.toml
vault:          https://localhost:48443/
agent:          interval 30s, jitter 2s, deadline 30s, concurrency 16, hook timeout 10s
templates_dir:  /repo/templates
auth:           method arc, audience https://vault.azure.net
  identity_endpoint: http://127.0.0.1:48342/metadata/identity/oauth2/token
  imds_endpoint: http://127.0.0.1:48342/
  insecure_test_arc_token_dir (TEST ONLY): /repo/demo/out/tokens
tls ca_file:    /repo/demo/out/ca.pem
secrets (2):
  api_key = secret api-key (latest) in https://localhost:48443/
  db_password = secret psql-password (latest) in https://localhost:48443/
files (2):
  /repo/demo/out/files/pgpass <- template /repo/templates/pgpass.tera
      mode 0600, owner -, group -, dir_mode 0755, on_change: echo kvsync: hook ran for $KVSYNC_CHANGED
  /repo/demo/out/files/app.env <- template /repo/templates/app.env.tera
      mode 0640, owner -, group -, dir_mode 0755, on_change: echo kvsync: hook ran for $KVSYNC_CHANGED
";
    assert_eq!(s, expected);
}

/// The TOML examples in docs/CONFIG.md, joined after a default vault, form
/// a valid config: the reference cannot drift from the parser.
#[test]
fn config_reference_examples_parse() {
    let doc = include_str!("../../docs/CONFIG.md");
    let mut text = String::from(VAULT);
    let mut blocks = 0;
    let mut in_block = false;
    for line in doc.lines() {
        match line.trim() {
            "```toml" => {
                in_block = true;
                blocks += 1;
            }
            "```" => in_block = false,
            _ if in_block => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    assert!(blocks >= 2, "expected TOML examples in docs/CONFIG.md");
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.secrets.len(), 5);
    assert_eq!(c.files.len(), 3);
}

// Hooks as argv, per-file hook_timeout, platform protection keys (issue 11).

#[test]
fn on_change_string_or_array() {
    let c = parse(&with_vault(
        "[[file]]\npath = \"/a\"\ncontents = \"a\"\non_change = \"nginx -s reload\"\n\
         [[file]]\npath = \"/b\"\ncontents = \"b\"\non_change = [\"systemctl\", \"reload\", \"nginx\"]\n\
         verify = [\"/usr/bin/check\", \"--strict\"]\nhook_timeout = \"5s\"\n",
    ))
    .unwrap();
    let a = c.files[0].on_change.as_ref().unwrap();
    assert_eq!(a.as_shell(), Some("nginx -s reload"));
    assert_eq!(a.timeout, None);
    let b = c.files[1].on_change.as_ref().unwrap();
    assert_eq!(b.as_shell(), None);
    assert_eq!(b.to_string(), r#"["systemctl","reload","nginx"]"#);
    assert_eq!(b.timeout, Some(Duration::from_secs(5)));
    let v = c.files[1].verify.as_ref().unwrap();
    assert_eq!(v.to_string(), r#"["/usr/bin/check","--strict"]"#);
    assert_eq!(v.timeout, Some(Duration::from_secs(5)));
}

#[test]
fn on_change_array_must_name_a_program() {
    let t = with_vault("[[file]]\npath = \"/a\"\ncontents = \"a\"\non_change = []\n");
    assert_diag(&t, "file[0].on_change", 5, "expected a program");
    let t = with_vault("[[file]]\npath = \"/a\"\ncontents = \"a\"\non_change = [\"x\", 1]\n");
    assert_diag(&t, "file[0].on_change", 5, "array of strings");
    let t = with_vault("[[file]]\npath = \"/a\"\ncontents = \"a\"\nverify = 3\n");
    assert_diag(&t, "file[0].verify", 5, "a command string or an array");
}

#[test]
fn a_hook_group_agrees_on_its_timeout() {
    let t = with_vault(
        "[[file]]\npath = \"/a\"\ncontents = \"a\"\non_change = [\"r\"]\nhook_timeout = \"5s\"\n\
         [[file]]\npath = \"/b\"\ncontents = \"b\"\non_change = [\"r\"]\nhook_timeout = \"6s\"\n",
    );
    assert_diag(&t, "file[1].hook_timeout", 11, "must agree");
    let t = with_vault("[[file]]\npath = \"/a\"\ncontents = \"a\"\nhook_timeout = \"0s\"\n");
    assert_diag(&t, "file[0].hook_timeout", 5, "greater than zero");
}

#[test]
#[cfg(unix)]
fn acl_on_unix_names_the_unix_keys() {
    let t = with_vault("[[file]]\npath = \"/a\"\ncontents = \"a\"\nacl = [\"SYSTEM:F\"]\n");
    assert_diag(
        &t,
        "file[0].acl",
        5,
        "Windows only; on this platform use mode/owner/group",
    );
}

#[test]
#[cfg(unix)]
fn the_windows_example_fails_on_unix_only_for_its_acl() {
    let e = config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/windows/kvsync.toml"
    )))
    .unwrap_err();
    let keys: Vec<&str> = e.diagnostics.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["file[0].acl"], "{e}");
}
