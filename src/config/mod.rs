//! Configuration: the TOML file (see SPEC.md "Config file") parsed in two
//! stages, a raw serde mirror ([`raw`]) and the resolved, checked [`Config`]
//! with real types. All errors are collected and reported at once, each as
//! `path:line:col: key: what was expected`. This module never touches the
//! network and never reads a secret.

mod files;
pub mod raw;
mod resolve;
mod selections;
mod store;
mod summary;
pub mod trust;
mod vault_ref;

pub use files::parse_mode;
pub use resolve::{MAX_CONCURRENCY, host_port};
pub use selections::matches as selection_matches;
pub use summary::summary;
pub use vault_ref::VaultRef;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

/// Default `[agent] interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Default `[agent] jitter`.
pub const DEFAULT_JITTER: Duration = Duration::from_secs(30);
/// Default overall deadline of a one-shot run (issue: "default 2 minutes").
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// Default number of Key Vault requests in flight at once. Key Vault
/// throttles at ~4,000 GETs per vault per 10 s (PROTOCOL.md §5); one host
/// makes at most N requests per round whatever this is, so it only sets how
/// fast those N go out: 16 at ~20 ms per request is 800/s for well under a
/// second at N = 500 (BENCHMARKS.md), and a fleet's load is set by requests
/// per interval (see deploy/FLEET.md), not by this.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default `on_change` hook timeout.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[agent] cert_expiry_warning`: warn two weeks before a
/// delivered certificate expires (the default, 14 days).
pub const DEFAULT_CERT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
/// Default `[exec] stop_timeout`: SIGTERM, then SIGKILL after this long
/// (Docker's and systemd's defaults are 10 s and 90 s; 10 s keeps a restart
/// on rotation short).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[exec] signal` with `on_change = "signal"`.
pub const DEFAULT_EXEC_SIGNAL: &str = "SIGHUP";
/// Signals `[exec] signal` may name (the ones services use to reload).
pub const EXEC_SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH",
];
/// Default mode of parent directories kvsync creates.
pub const DEFAULT_DIR_MODE: u32 = 0o755;
/// Default file mode when `mode` is not given: owner-only, since files
/// usually hold secrets.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

#[derive(Clone, Debug)]
pub struct Config {
    /// The config file this was loaded from (absolute).
    pub source: PathBuf,
    /// Directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// Default vault for secrets that don't name one (a URL, or a template
    /// over instance metadata resolved each round).
    pub vault: Option<VaultRef>,
    pub agent: AgentConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    /// Secrets by alias.
    pub secrets: BTreeMap<String, SecretSpec>,
    /// `[selections]` by alias.
    pub selections: BTreeMap<String, SelectionSpec>,
    pub files: Vec<FileSpec>,
    /// `[[file]]` tables whose `path` is a directory written one file per
    /// name (`selection = ...`, `ccs = true`); kept apart from `files`,
    /// whose entries are one file each.
    pub fanouts: Vec<FanoutSpec>,
    /// `[env]`: variable name → template, in file order (`kvsync exec`).
    pub env: Vec<EnvVar>,
    pub exec: ExecConfig,
    /// `[[store]]`: Windows certificate store targets (always empty on Unix,
    /// where the table is a config error).
    pub stores: Vec<StoreSpec>,
}

/// One `[env]` entry: rendered like a file, added to the child's environment.
#[derive(Clone, Debug)]
pub struct EnvVar {
    pub name: String,
    pub template: String,
}

/// What `kvsync exec` does when an `[env]` value or a file changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnChange {
    /// Stop the child (signal, then SIGKILL after `stop_timeout`) and start it again.
    Restart,
    /// Send `[exec] signal` to the running child (Unix only).
    Signal,
}

/// `[exec]`
#[derive(Clone, Debug)]
pub struct ExecConfig {
    pub on_change: OnChange,
    /// Signal name from [`EXEC_SIGNALS`], e.g. `SIGHUP`.
    pub signal: String,
    pub stop_timeout: Duration,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            on_change: OnChange::Restart,
            signal: DEFAULT_EXEC_SIGNAL.to_owned(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub interval: Duration,
    pub jitter: Duration,
    pub templates_dir: PathBuf,
    pub log_format: Option<LogFormat>,
    pub listen: Option<SocketAddr>,
    /// Overall deadline of `once`.
    pub deadline: Duration,
    /// Key Vault requests in flight at once.
    pub concurrency: usize,
    pub hook_timeout: Duration,
    /// Warn (log + metric) when a delivered certificate expires within this.
    pub cert_expiry_warning: Duration,
    /// `once` isolates hook groups like `run` (`once --keep-going`).
    pub keep_going: bool,
    /// `once` retries transient failures for this long (`once --wait`).
    pub once_wait: Option<Duration>,
    /// `POST /sync` is served on a non-loopback `listen` address.
    pub allow_remote_sync: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Auto,
    Arc,
    Imds,
    WorkloadIdentity,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// The user-assigned identity to use (`client_id`, `object_id` or
    /// `resource_id`; at most one can be configured); `None`: the
    /// system-assigned one.
    pub user_assigned: Option<UserAssigned>,
    /// Overrides `IDENTITY_ENDPOINT` (HIMDS token endpoint).
    pub identity_endpoint: Option<Url>,
    /// Overrides the IMDS base URL (`http://169.254.169.254`).
    pub imds_endpoint: Option<Url>,
    /// Overrides `AZURE_AUTHORITY_HOST` (Entra login endpoint).
    pub authority_host: Option<Url>,
    /// Token audience for vault hosts whose DNS suffix is not a known Key
    /// Vault suffix (e.g. a private endpoint alias or a local emulator).
    pub audience: Option<String>,
    /// TEST ONLY: `[auth] insecure_test_arc_token_dir`. Replaces the Arc
    /// agent's token directory in the challenge-path check. Documented as
    /// test-only; never set it on a real host.
    pub test_arc_token_dir: Option<PathBuf>,
    /// `[auth] arc_agent_user`: the user the Arc agent (himds) runs as;
    /// listeners of root or this user may receive the challenge key
    /// (default `himds`).
    pub arc_agent_user: Option<String>,
    /// Vault hosts (`host` or `host:port`) that may receive a token for the
    /// explicit `audience`: the hosts of the literal vault URLs of the
    /// config plus `[auth] audience_hosts`.
    pub audience_hosts: Vec<String>,
}

/// How `[auth]` selects a user-assigned identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserAssigned {
    ClientId(String),
    /// The identity's object (principal) id.
    ObjectId(String),
    /// The identity's ARM resource id.
    ResourceId(String),
}

impl UserAssigned {
    /// The client id, when that is how the identity is selected (workload
    /// identity knows no other selector).
    pub fn client_id(&self) -> Option<&str> {
        match self {
            UserAssigned::ClientId(c) => Some(c),
            _ => None,
        }
    }
}

impl AuthConfig {
    /// An `[auth]` section with only `method` set: no selector, no endpoint
    /// override, no explicit audience.
    pub fn with_method(method: AuthMethod) -> Self {
        Self {
            method,
            user_assigned: None,
            identity_endpoint: None,
            imds_endpoint: None,
            authority_host: None,
            audience: None,
            test_arc_token_dir: None,
            arc_agent_user: None,
            audience_hosts: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// Extra CA certificates (PEM) trusted in addition to the OS store and
    /// `SSL_CERT_FILE`.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    Secret,
    Certificate,
    /// `type = "key"`: the public part of a Key Vault key.
    Key,
}

#[derive(Clone, Debug)]
pub struct SecretSpec {
    pub alias: String,
    /// Key Vault object name.
    pub name: String,
    /// Pinned version (32 lowercase hex), or latest.
    pub version: Option<String>,
    pub vault: VaultRef,
    pub kind: SecretKind,
    /// Certificates only: append the self-signed root to `chain`/`fullchain`.
    pub include_root: bool,
    /// A missing (404) or disabled secret renders `default` instead of
    /// failing the round; `meta.<alias>.present` is then false.
    pub optional: bool,
    /// What `secrets.<alias>` is when an optional secret is absent.
    pub default: String,
    /// Certificates only: read `GET /certificates/{name}` (the leaf, no
    /// key, no chain) instead of the secret.
    pub public_only: bool,
}

/// One `[selections]` entry: every enabled secret of `vault` whose name
/// starts with `prefix` and whose tags include all of `tags`.
#[derive(Clone, Debug)]
pub struct SelectionSpec {
    pub alias: String,
    pub prefix: String,
    pub tags: BTreeMap<String, String>,
    pub vault: VaultRef,
    /// Names in `selected.<alias>` and fan-out files without the prefix.
    pub strip_prefix: bool,
}

/// `decode = "base64" | "hex"` of a `[[file]]`: the secret holds text that
/// encodes the bytes to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    Base64,
    Hex,
}

/// What a fan-out directory holds.
#[derive(Clone, Debug)]
pub enum FanoutSource {
    /// `selection = "alias"`: one file per selected secret, named after it.
    Selection {
        alias: String,
        decode: Option<Decode>,
    },
    /// `ccs = true`: one PFX per DNS name of a certificate, named as the
    /// IIS Centralized Certificate Store expects.
    Ccs {
        alias: String,
        pfx_password: Option<String>,
        pfx_legacy: bool,
    },
}

/// A `[[file]]` whose `path` is a directory of files kvsync names.
#[derive(Clone, Debug)]
pub struct FanoutSpec {
    /// Absolute directory path.
    pub dir: PathBuf,
    pub source: FanoutSource,
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub dir_mode: u32,
    pub on_change: Option<crate::hooks::Hook>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Pfx,
    Pem,
    Key,
    Cert,
    Chain,
    Fullchain,
    Raw,
}

#[derive(Clone, Debug)]
pub enum FileSource {
    /// A template file (absolute path after resolution).
    Template(PathBuf),
    /// An inline template (`contents = "..."`).
    Inline(String),
    /// A whole object (`secret = alias`, `format = ...`).
    Object { alias: String, format: OutputFormat },
}

#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Absolute destination path.
    pub path: PathBuf,
    pub source: FileSource,
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub dir_mode: u32,
    /// Windows: the protected DACL's entries (empty = SYSTEM and
    /// Administrators full control). Always empty on Unix.
    pub acl: Vec<crate::platform::acl::AclEntry>,
    /// With the file's `hook_timeout`, when set.
    pub on_change: Option<crate::hooks::Hook>,
    /// `format = "pfx"` only: alias of the secret holding the PFX password.
    pub pfx_password: Option<String>,
    /// `format = "pfx"` only: 3DES/SHA-1 for Windows Server 2016 and older.
    pub pfx_legacy: bool,
    /// Command run against the candidate file before it replaces the live
    /// one (`KVSYNC_CANDIDATE`, `KVSYNC_DESTINATION`); non-zero exit = keep
    /// the live file.
    pub verify: Option<crate::hooks::Hook>,
    /// Restore the previous files of the hook group if its `on_change`
    /// fails (every member of the group agrees).
    pub rollback: bool,
    /// Follow symlinks in the directories of `path` and skip the check of
    /// who may write to them (trusts every owner of that path; default
    /// false: a symlinked or foreign-writable ancestor is refused).
    pub follow_symlinks: bool,
    /// `secret = alias` with `format = "raw"`: write the decoded bytes.
    pub decode: Option<Decode>,
}

/// Default `[[store]] keep`: the current version and the one before it (a
/// rollback target while clients still hold the old one).
pub const DEFAULT_STORE_KEEP: usize = 2;

/// Which registry hive a certificate store lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreLocation {
    LocalMachine,
    CurrentUser,
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LocalMachine => "LocalMachine",
            Self::CurrentUser => "CurrentUser",
        })
    }
}

/// One `[[store]]`: a certificate secret kept in a Windows certificate store
/// (`crate::store`).
#[derive(Clone, Debug)]
pub struct StoreSpec {
    /// Alias of a `type = "certificate"` secret.
    pub alias: String,
    pub location: StoreLocation,
    /// Store name (`My`, `WebHosting`, ...); never `Root`.
    pub name: String,
    /// Accounts (names or SID strings) granted read access to the key.
    pub accounts: Vec<String>,
    /// Versions of this certificate kept in the store (>= 1).
    pub keep: usize,
    /// Import the key as exportable (default: not).
    pub exportable: bool,
    /// Friendly name; default `kvsync <alias> <notAfter>`.
    pub friendly_name: Option<String>,
    /// Run once when a new version was added; `KVSYNC_CHANGED` is its
    /// thumbprint.
    pub on_change: Option<crate::hooks::Hook>,
    /// Update http.sys SSL bindings of superseded versions in place.
    pub rebind: bool,
}

impl StoreSpec {
    /// `LocalMachine\My` form, for logs and messages.
    pub fn label(&self) -> String {
        format!("{}\\{}", self.location, self.name)
    }
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key, e.g. `file[2].mode` or `secrets.db`.
    pub key: String,
    /// What was expected / what is wrong.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}: {}", self.key, self.message)
    }
}

/// All problems found in a config file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for d in &self.diagnostics {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Read and resolve a config file. The path is made absolute first (it is
/// the base of relative paths and appears in every diagnostic). As root,
/// the file, its templates and the templates directory must be owned by
/// root and writable by nobody else ([`trust`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let strict = trust::required();
    let read_error = |e: std::io::Error| ConfigError {
        diagnostics: vec![Diagnostic {
            file: abs.clone(),
            line: None,
            column: None,
            key: "-".to_owned(),
            message: format!("cannot read the config file: {e}"),
        }],
    };
    // One descriptor for the check and the read: what is checked is what
    // is parsed.
    let mut file = std::fs::File::open(&abs).map_err(read_error)?;
    if strict {
        let meta = file.metadata().map_err(read_error)?;
        if let Some(d) = trust::check_meta(&abs, &meta, "config file") {
            return Err(ConfigError {
                diagnostics: vec![d],
            });
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(read_error)?;
    let config = parse(&text, &abs)?;
    if strict {
        let diagnostics = trust::check_templates(&config);
        if !diagnostics.is_empty() {
            return Err(ConfigError { diagnostics });
        }
    }
    Ok(config)
}

/// Resolve config text; `path` is used for messages and relative paths
/// (made absolute against the working directory if it is relative). Reads no
/// file; looks up `owner`/`group` names in the host's user database.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let source = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (raw, problems) = raw::parse(text);
    let mut problems = resolve::Problems(problems);
    // Stage two runs even when stage one found problems, so everything is
    // reported at once; sections that failed stage one are simply absent.
    let config = resolve::resolve(raw, &source, &mut problems);
    match config {
        Some(c) if problems.0.is_empty() => Ok(c),
        _ => Err(to_error(text, path, problems.0)),
    }
}

fn to_error(text: &str, path: &Path, problems: Vec<raw::Problem>) -> ConfigError {
    let mut diagnostics: Vec<Diagnostic> = problems
        .into_iter()
        .map(|p| {
            let (line, column) = match p.span {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            Diagnostic {
                file: path.to_path_buf(),
                line,
                column,
                key: p.key,
                message: p.message,
            }
        })
        .collect();
    diagnostics.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column, d.key.clone()));
    diagnostics.dedup();
    ConfigError { diagnostics }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        let t = "ab\nçd = 1\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 5), (2, 2)); // after the 2-byte 'ç'
        assert_eq!(line_col(t, 4), (2, 1)); // inside 'ç': clamped to its start
        assert_eq!(line_col(t, 999), (3, 1));
    }
}
