//! Config keys of issue 16: `[env]`, `[exec]`, optional secrets and the
//! `[agent]` keys of `once`/`POST /sync`. Each invalid value names file,
//! line, column and key.

use std::path::Path;
use std::time::Duration;

use kvsync::config::{self, OnChange};

const CFG: &str = "/etc/kvsync/kvsync.toml";
const VAULT: &str = "vault = \"https://kv.vault.azure.net\"\n";

fn parse(text: &str) -> Result<config::Config, config::ConfigError> {
    config::parse(&format!("{VAULT}{text}"), Path::new(CFG))
}

/// The rendered diagnostic for `key` (line counted with the vault line).
#[track_caller]
fn diag(text: &str, key: &str, line: usize, needle: &str) {
    let e = match parse(text) {
        Ok(_) => panic!("should be rejected:\n{text}"),
        Err(e) => e,
    };
    let rendered = e.to_string();
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.key == key)
        .unwrap_or_else(|| panic!("no diagnostic for {key}:\n{rendered}"));
    assert_eq!(d.line, Some(line), "{rendered}");
    assert!(d.message.contains(needle), "{needle:?} not in:\n{rendered}");
}

#[test]
fn env_exec_and_agent_keys_resolve() {
    let c = parse(
        r#"
[agent]
keep_going = true
once_wait = "5m"
allow_remote_sync = true

[secrets]
db = "db-password"
flag = { name = "feature-flag", optional = true, default = "off" }

[env]
DATABASE_PASSWORD = "{{ secrets.db }}"
FLAG = "{{ secrets.flag }}"

[exec]
on_change = "signal"
signal = "usr1"
stop_timeout = "3s"
"#,
    )
    .unwrap();
    assert!(c.agent.keep_going && c.agent.allow_remote_sync);
    assert_eq!(c.agent.once_wait, Some(Duration::from_secs(300)));
    let names: Vec<&str> = c.env.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["DATABASE_PASSWORD", "FLAG"]);
    assert_eq!(c.exec.on_change, OnChange::Signal);
    assert_eq!(c.exec.signal, "SIGUSR1");
    assert_eq!(c.exec.stop_timeout, Duration::from_secs(3));
    assert!(c.secrets["flag"].optional);
    assert_eq!(c.secrets["flag"].default, "off");
    assert!(!c.secrets["db"].optional);

    let d = parse("").unwrap();
    assert_eq!(d.exec.on_change, OnChange::Restart);
    assert_eq!(d.exec.signal, "SIGHUP");
    assert_eq!(d.exec.stop_timeout, config::DEFAULT_STOP_TIMEOUT);
    assert!(!d.agent.keep_going && d.agent.once_wait.is_none());
}

#[test]
fn bad_exec_and_env_values_are_named() {
    diag(
        "[exec]\non_change = \"reload\"\n",
        "exec.on_change",
        3,
        "\"restart\" or \"signal\"",
    );
    diag("[exec]\nsignal = \"SIGFOO\"\n", "exec.signal", 3, "SIGHUP");
    diag(
        "[exec]\nstop_timeout = \"soon\"\n",
        "exec.stop_timeout",
        3,
        "duration",
    );
    diag(
        "[exec]\nrestart = true\n",
        "exec.restart",
        3,
        "unknown field",
    );
    diag(
        "[env]\n1BAD = \"x\"\n",
        "env.1BAD",
        3,
        "environment variable name",
    );
    diag("[env]\nPORT = 8080\n", "env.PORT", 3, "template string");
    diag(
        "[agent]\nonce_wait = \"forever\"\n",
        "agent.once_wait",
        3,
        "duration",
    );
}

#[test]
fn optional_rules() {
    diag(
        "[secrets]\nx = { name = \"x\", default = \"d\" }\n",
        "secrets.x.default",
        3,
        "optional = true",
    );
    diag(
        "[secrets]\nx = { name = \"x\", type = \"certificate\", optional = true }\n",
        "secrets.x.optional",
        3,
        "only to type = \"secret\"",
    );
}

#[test]
fn env_templates_are_checked_like_files() {
    let c = parse("[secrets]\ndb = \"db\"\n[env]\nX = \"{{ secrets.nope }}\"\n").unwrap();
    let errors = match kvsync::render::Renderer::compile(&c) {
        Ok(_) => panic!("undeclared alias accepted"),
        Err(e) => e,
    };
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("[env] X") && t.contains("nope")),
        "{text:?}"
    );
}

/// The issue-16 examples of docs/CONFIG.md (```toml standalone blocks, each
/// a config of its own) parse and compile.
#[test]
fn config_reference_standalone_examples_parse() {
    let doc = include_str!("../../docs/CONFIG.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```toml standalone") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    // The issue-15 standalone examples are checked by docs::config_md_issue15_examples_load_and_compile.
    blocks.retain(|b| b.contains("optional = true") || b.contains("[exec]"));
    assert_eq!(blocks.len(), 2, "the optional-secret and exec examples");
    for block in blocks {
        let c = parse(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        kvsync::render::Renderer::compile(&c).unwrap_or_else(|e| panic!("{e:?}\n{block}"));
    }
}
