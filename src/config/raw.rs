//! Stage one of config loading: a serde mirror of the TOML file, exactly as
//! written (`deny_unknown_fields`, `Option` fields, `toml::Spanned` on every
//! value that gets a semantic check in stage two).
//!
//! The document is parsed once into toml's spanned tree, then each section,
//! each `[secrets]` entry and each `[[file]]` table is deserialized on its
//! own, so one bad entry does not hide the problems of the others. Every
//! problem is returned as a [`Problem`] carrying the byte span and the dotted
//! key it belongs to. This module never resolves paths, users or URLs: that
//! is stage two (`config::resolve`).

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// Top-level keys of the config file, in the order the docs list them.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "vault",
    "agent",
    "auth",
    "tls",
    "secrets",
    "selections",
    "file",
    "env",
    "exec",
    "store",
];

/// One problem found while loading, before it is turned into a
/// [`super::Diagnostic`] (which needs the file name and line/column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Byte range in the config text, when known.
    pub span: Option<Range<usize>>,
    /// Dotted key, e.g. `file[2].mode`.
    pub key: String,
    /// What was expected / what is wrong.
    pub message: String,
}

impl Problem {
    pub fn new(
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            span,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `[agent]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub interval: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub templates_dir: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub deadline: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<i64>>,
    pub hook_timeout: Option<Spanned<String>>,
    pub cert_expiry_warning: Option<Spanned<String>>,
    pub keep_going: Option<Spanned<bool>>,
    pub once_wait: Option<Spanned<String>>,
    pub allow_remote_sync: Option<Spanned<bool>>,
}

/// `[exec]` (the `kvsync exec` supervisor).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExec {
    pub on_change: Option<Spanned<String>>,
    pub signal: Option<Spanned<String>>,
    pub stop_timeout: Option<Spanned<String>>,
}

/// One `[env]` entry: `NAME = "template"`, with the span of its key.
#[derive(Debug)]
pub struct RawEnvVar {
    pub name: Spanned<String>,
    pub template: Spanned<String>,
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub method: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub object_id: Option<Spanned<String>>,
    pub resource_id: Option<Spanned<String>>,
    pub identity_endpoint: Option<Spanned<String>>,
    pub imds_endpoint: Option<Spanned<String>>,
    pub authority_host: Option<Spanned<String>>,
    pub audience: Option<Spanned<String>>,
    /// TEST ONLY (see docs/CONFIG.md): replaces the Arc agent's token
    /// directory in the challenge-file check.
    pub insecure_test_arc_token_dir: Option<Spanned<String>>,
    pub arc_agent_user: Option<Spanned<String>>,
    pub audience_hosts: Option<Spanned<Vec<String>>>,
}

/// `[tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<Spanned<String>>,
}

/// The table form of a `[secrets]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecretTable {
    pub name: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
    pub vault: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub include_root: Option<Spanned<bool>>,
    pub optional: Option<Spanned<bool>>,
    pub default: Option<Spanned<String>>,
    pub public_only: Option<Spanned<bool>>,
}

/// One `[selections]` entry: `alias = { prefix, tags, vault, strip_prefix }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelection {
    pub prefix: Option<Spanned<String>>,
    pub tags: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub vault: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<bool>>,
}

/// A selection alias with the span of its key.
#[derive(Debug)]
pub struct RawSelectionEntry {
    pub alias: Spanned<String>,
    pub selection: RawSelection,
}

/// A `[secrets]` entry: `alias = "name"` or `alias = { name = ..., ... }`.
/// Told apart by hand (not `untagged`) so errors keep their spans.
#[derive(Debug)]
pub enum RawSecret {
    Name(Spanned<String>),
    /// Boxed: the table is far larger than a name.
    Table(Box<RawSecretTable>),
}

/// One `[[file]]` table. `mode`, `dir_mode`, `owner` and `group` are kept as
/// raw TOML values so stage two can explain a number where a string is
/// expected (and accept numeric ids for owner/group).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub path: Option<Spanned<String>>,
    pub template: Option<Spanned<String>>,
    pub contents: Option<Spanned<String>>,
    pub secret: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub mode: Option<Spanned<toml::Value>>,
    pub owner: Option<Spanned<toml::Value>>,
    pub group: Option<Spanned<toml::Value>>,
    pub dir_mode: Option<Spanned<toml::Value>>,
    /// Windows: `["ACCOUNT:R|M|F", ...]` (string or array kept raw).
    pub acl: Option<Spanned<toml::Value>>,
    /// A string (shell) or an array of strings (argv).
    pub on_change: Option<Spanned<toml::Value>>,
    /// Overrides `[agent] hook_timeout` for this file's hooks.
    pub hook_timeout: Option<Spanned<String>>,
    pub pfx_password: Option<Spanned<String>>,
    pub pfx_legacy: Option<Spanned<bool>>,
    pub verify: Option<Spanned<toml::Value>>,
    pub rollback: Option<Spanned<bool>>,
    pub follow_symlinks: Option<Spanned<bool>>,
    pub selection: Option<Spanned<String>>,
    pub decode: Option<Spanned<String>>,
    pub ccs: Option<Spanned<bool>>,
}

/// One `[[store]]` table (Windows certificate store target, `crate::store`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub secret: Option<Spanned<String>>,
    pub location: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub accounts: Option<Spanned<Vec<String>>>,
    pub keep: Option<Spanned<i64>>,
    pub exportable: Option<Spanned<bool>>,
    pub friendly_name: Option<Spanned<String>>,
    /// A string (shell) or an array of strings (argv).
    pub on_change: Option<Spanned<toml::Value>>,
    pub rebind: Option<Spanned<bool>>,
}

/// One `[[store]]` with its position in the array and its table's span.
#[derive(Debug)]
pub struct RawStoreEntry {
    pub index: usize,
    pub span: Range<usize>,
    pub store: RawStore,
}

/// A secret alias with the span of its key.
#[derive(Debug)]
pub struct RawAlias {
    pub alias: Spanned<String>,
    pub secret: RawSecret,
}

/// One `[[file]]` with its position in the array and its table's span.
#[derive(Debug)]
pub struct RawFileEntry {
    pub index: usize,
    pub span: Range<usize>,
    pub file: RawFile,
}

/// The whole document after stage one. Sections that failed to deserialize
/// are left out (their problems are reported), the rest is kept.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub vault: Option<Spanned<String>>,
    pub agent: RawAgent,
    pub auth: RawAuth,
    pub tls: RawTls,
    pub exec: RawExec,
    pub env: Vec<RawEnvVar>,
    /// Every declared alias, even those whose entry failed to deserialize,
    /// so a `secret = alias` reference to it is not reported twice.
    pub declared_aliases: Vec<String>,
    pub secrets: Vec<RawAlias>,
    /// `[selections]`, in file order.
    pub selections: Vec<RawSelectionEntry>,
    /// Every declared selection alias (even if its entry failed).
    pub declared_selections: Vec<String>,
    pub files: Vec<RawFileEntry>,
    pub stores: Vec<RawStoreEntry>,
}

/// Parse `text` into a [`RawConfig`], collecting every problem.
pub fn parse(text: &str) -> (RawConfig, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut raw = RawConfig::default();
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let key = e
                .span()
                .and_then(|s| key_at(root.get_ref(), &s))
                .unwrap_or_else(|| "-".to_owned());
            problems.push(Problem::new(e.span(), key, syntax_message(e.message())));
        }
        return (raw, problems);
    }
    let root_table = root.get_ref();
    for (key, value) in root_table.iter() {
        let name: &str = key.get_ref();
        let mut cx = Cx {
            root: root_table,
            problems: &mut problems,
        };
        match name {
            "vault" => raw.vault = cx.de(value, "vault"),
            "agent" => raw.agent = cx.section(value, "agent").unwrap_or_default(),
            "auth" => raw.auth = cx.section(value, "auth").unwrap_or_default(),
            "tls" => raw.tls = cx.section(value, "tls").unwrap_or_default(),
            "exec" => raw.exec = cx.section(value, "exec").unwrap_or_default(),
            "env" => cx.env(value, &mut raw),
            "secrets" => cx.secrets(value, &mut raw),
            "selections" => cx.selections(value, &mut raw),
            "file" => cx.files(value, &mut raw),
            "store" => cx.stores(value, &mut raw),
            other => problems.push(Problem::new(
                Some(key.span()),
                other,
                format!("unknown key, expected one of {}", TOP_LEVEL_KEYS.join(", ")),
            )),
        }
    }
    (raw, problems)
}

/// toml's parser messages start lowercase and are terse; prefix them so the
/// operator knows this is a TOML syntax problem, not a kvsync rule.
fn syntax_message(message: &str) -> String {
    format!("invalid TOML: {}", message.trim())
}

/// Deserialization context: the whole tree (to name the key of an error by
/// its span) and the problem list.
struct Cx<'a, 'i> {
    root: &'a DeTable<'i>,
    problems: &'a mut Vec<Problem>,
}

impl<'i> Cx<'_, 'i> {
    /// Deserialize one value; on error record a problem keyed by the
    /// innermost key whose span contains the error (else `fallback`). For a
    /// table, the offending entry is then dropped and the rest deserialized
    /// again, so every bad key of one table is reported (bounded by the
    /// number of entries).
    fn de<T: Deserialize<'i>>(
        &mut self,
        value: &Spanned<DeValue<'i>>,
        fallback: &str,
    ) -> Option<T> {
        let mut value = value.clone();
        loop {
            let e = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(v) => return Some(v),
                Err(e) => e,
            };
            let span = e.span().unwrap_or_else(|| value.span());
            let key = key_at(self.root, &span).unwrap_or_else(|| fallback.to_owned());
            self.problems.push(Problem::new(
                Some(span.clone()),
                key,
                serde_message(e.message()),
            ));
            let DeValue::Table(table) = value.get_mut() else {
                return None;
            };
            let culprit = table
                .iter()
                .find(|(k, v)| contains(&k.span(), &span) || contains(&v.span(), &span))
                .map(|(k, _)| k.get_ref().to_string());
            match culprit {
                Some(k) => {
                    table.remove(k.as_str());
                }
                None => return None,
            }
        }
    }

    /// A `[section]`: must be a table, then deserialized as `T`.
    fn section<T: Deserialize<'i>>(
        &mut self,
        value: &Spanned<DeValue<'i>>,
        key: &str,
    ) -> Option<T> {
        if !value.get_ref().is_table() {
            self.problems.push(Problem::new(
                Some(value.span()),
                key,
                format!(
                    "expected a table ([{key}]), found {}",
                    value.get_ref().type_str()
                ),
            ));
            return None;
        }
        self.de(value, key)
    }

    fn secrets(&mut self, value: &Spanned<DeValue<'i>>, raw: &mut RawConfig) {
        let Some(table) = value.get_ref().as_table() else {
            self.problems.push(Problem::new(
                Some(value.span()),
                "secrets",
                format!(
                    "expected a table ([secrets]), found {}",
                    value.get_ref().type_str()
                ),
            ));
            return;
        };
        for (alias, entry) in table.iter() {
            let alias_name: &str = alias.get_ref();
            raw.declared_aliases.push(alias_name.to_owned());
            let key = format!("secrets.{alias_name}");
            let secret = match entry.get_ref() {
                DeValue::String(s) => {
                    Some(RawSecret::Name(Spanned::new(entry.span(), s.to_string())))
                }
                DeValue::Table(_) => self
                    .de::<RawSecretTable>(entry, &key)
                    .map(|t| RawSecret::Table(Box::new(t))),
                other => {
                    self.problems.push(Problem::new(
                        Some(entry.span()),
                        key,
                        format!(
                            "expected a secret name (string) or an inline table \
                             {{ name, version, vault, type, include_root, optional, default, public_only }}, found {}",
                            other.type_str()
                        ),
                    ));
                    None
                }
            };
            if let Some(secret) = secret {
                let alias = Spanned::new(alias.span(), alias_name.to_owned());
                raw.secrets.push(RawAlias { alias, secret });
            }
        }
    }

    fn env(&mut self, value: &Spanned<DeValue<'i>>, raw: &mut RawConfig) {
        let Some(table) = value.get_ref().as_table() else {
            self.problems.push(Problem::new(
                Some(value.span()),
                "env",
                format!(
                    "expected a table ([env]), found {}",
                    value.get_ref().type_str()
                ),
            ));
            return;
        };
        for (name, entry) in table.iter() {
            let key = format!("env.{}", name.get_ref());
            match entry.get_ref() {
                DeValue::String(s) => raw.env.push(RawEnvVar {
                    name: Spanned::new(name.span(), name.get_ref().to_string()),
                    template: Spanned::new(entry.span(), s.to_string()),
                }),
                other => self.problems.push(Problem::new(
                    Some(entry.span()),
                    key,
                    format!(
                        "expected a template string such as \"{{{{ secrets.db_password }}}}\", found {}",
                        other.type_str()
                    ),
                )),
            }
        }
    }

    fn selections(&mut self, value: &Spanned<DeValue<'i>>, raw: &mut RawConfig) {
        let Some(table) = value.get_ref().as_table() else {
            self.problems.push(Problem::new(
                Some(value.span()),
                "selections",
                format!(
                    "expected a table ([selections]), found {}",
                    value.get_ref().type_str()
                ),
            ));
            return;
        };
        for (alias, entry) in table.iter() {
            let alias_name: &str = alias.get_ref();
            raw.declared_selections.push(alias_name.to_owned());
            let key = format!("selections.{alias_name}");
            if !entry.get_ref().is_table() {
                self.problems.push(Problem::new(
                    Some(entry.span()),
                    key,
                    format!(
                        "expected an inline table {{ prefix, tags, vault, strip_prefix }}, found {}",
                        entry.get_ref().type_str()
                    ),
                ));
                continue;
            }
            if let Some(selection) = self.de::<RawSelection>(entry, &key) {
                raw.selections.push(RawSelectionEntry {
                    alias: Spanned::new(alias.span(), alias_name.to_owned()),
                    selection,
                });
            }
        }
    }

    fn files(&mut self, value: &Spanned<DeValue<'i>>, raw: &mut RawConfig) {
        let Some(array) = value.get_ref().as_array() else {
            self.problems.push(Problem::new(
                Some(value.span()),
                "file",
                "expected an array of tables ([[file]] sections)",
            ));
            return;
        };
        for (index, entry) in array.iter().enumerate() {
            let key = format!("file[{index}]");
            if !entry.get_ref().is_table() {
                self.problems.push(Problem::new(
                    Some(entry.span()),
                    key,
                    format!(
                        "expected a table ([[file]]), found {}",
                        entry.get_ref().type_str()
                    ),
                ));
                continue;
            }
            if let Some(file) = self.de::<RawFile>(entry, &key) {
                raw.files.push(RawFileEntry {
                    index,
                    span: entry.span(),
                    file,
                });
            }
        }
    }
}

impl<'i> Cx<'_, 'i> {
    fn stores(&mut self, value: &Spanned<DeValue<'i>>, raw: &mut RawConfig) {
        let Some(array) = value.get_ref().as_array() else {
            self.problems.push(Problem::new(
                Some(value.span()),
                "store",
                "expected an array of tables ([[store]] sections)",
            ));
            return;
        };
        for (index, entry) in array.iter().enumerate() {
            let key = format!("store[{index}]");
            if !entry.get_ref().is_table() {
                self.problems.push(Problem::new(
                    Some(entry.span()),
                    key,
                    format!(
                        "expected a table ([[store]]), found {}",
                        entry.get_ref().type_str()
                    ),
                ));
                continue;
            }
            if let Some(store) = self.de::<RawStore>(entry, &key) {
                raw.stores.push(RawStoreEntry {
                    index,
                    span: entry.span(),
                    store,
                });
            }
        }
    }
}

/// serde's derive names the Rust type in some messages; say "table" instead.
fn serde_message(message: &str) -> String {
    let mut m = message.trim().to_owned();
    for ty in [
        "RawAgent",
        "RawAuth",
        "RawTls",
        "RawExec",
        "RawSecretTable",
        "RawSelection",
        "RawFile",
        "RawStore",
    ] {
        m = m.replace(&format!("struct {ty}"), "a table");
    }
    m
}

/// The dotted key of the innermost key or value whose span contains `span`.
pub fn key_at(table: &DeTable<'_>, span: &Range<usize>) -> Option<String> {
    key_in_table(table, span, "")
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn key_in_table(table: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    for (k, v) in table.iter() {
        let path = join(prefix, k.get_ref());
        if let Some(inner) = key_in_value(v.get_ref(), span, &path) {
            return Some(inner);
        }
        if contains(&k.span(), span) || contains(&v.span(), span) {
            return Some(path);
        }
    }
    None
}

fn key_in_value(value: &DeValue<'_>, span: &Range<usize>, path: &str) -> Option<String> {
    match value {
        DeValue::Table(t) => key_in_table(t, span, path),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, el)| {
            let el_path = format!("{path}[{i}]");
            key_in_value(el.get_ref(), span, &el_path)
                .or_else(|| contains(&el.span(), span).then_some(el_path))
        }),
        _ => None,
    }
}
