//! Stage two of config loading: turn the raw mirror ([`super::raw`]) into the
//! checked [`Config`] — durations, URLs, absolute paths, enums — collecting
//! every problem instead of stopping at the first. `[[file]]` tables are
//! resolved in [`super::files`]. Nothing here touches the network; the only
//! host lookups are user/group names (in `files`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use url::Url;

use crate::vault::address::{self as vault_url, VaultUrl};

use super::raw::{
    Problem, RawAgent, RawAlias, RawAuth, RawConfig, RawEnvVar, RawExec, RawSecret, RawTls,
};
use super::{
    AgentConfig, AuthConfig, AuthMethod, Config, DEFAULT_CERT_EXPIRY_WARNING, DEFAULT_CONCURRENCY,
    DEFAULT_DEADLINE, DEFAULT_EXEC_SIGNAL, DEFAULT_HOOK_TIMEOUT, DEFAULT_INTERVAL, DEFAULT_JITTER,
    DEFAULT_STOP_TIMEOUT, EXEC_SIGNALS, EnvVar, ExecConfig, LogFormat, OnChange, SecretKind,
    SecretSpec, TlsConfig, UserAssigned, VaultRef,
};

/// Upper bound of `[agent] concurrency`. Key Vault throttles at 4000
/// requests / 10 s per vault (Azure docs, "Key Vault service limits"); 64 in
/// flight is far beyond what one host needs and keeps a typo from opening
/// thousands of connections.
pub const MAX_CONCURRENCY: usize = 64;
/// Default templates directory, relative to the config file's directory.
pub const DEFAULT_TEMPLATES_DIR: &str = "templates";
/// Longest Key Vault object name (Azure docs, "Key Vault object names").
pub const MAX_NAME_LEN: usize = 127;
/// A Key Vault object version is 32 hex characters.
pub const VERSION_LEN: usize = 32;

/// Collected problems of one config file.
#[derive(Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn at<T>(&mut self, v: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(Some(v.span()), key, message));
    }
    pub fn push(&mut self, p: Problem) {
        self.0.push(p);
    }
}

/// Resolve everything; `source` is the absolute config path.
pub fn resolve(raw: RawConfig, source: &Path, p: &mut Problems) -> Option<Config> {
    let base_dir = source
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let agent = agent(&raw.agent, &base_dir, p);
    let mut auth = auth(&raw.auth, &base_dir, p);
    let tls = tls(&raw.tls, &base_dir);
    let vault = raw
        .vault
        .as_ref()
        .and_then(|v| vault_ref(v, "vault", &auth, p));
    let default_vault = DefaultVault {
        url: vault.clone(),
        declared: raw.vault.is_some(),
    };
    let secrets = secrets(&raw, &default_vault, &auth, p);
    let selections = super::selections::resolve_selections(&raw, &default_vault, &auth, p);
    let (files, fanouts) =
        super::files::resolve_files(&raw, &agent, &base_dir, &secrets, &selections, p);
    let env = env(&raw.env, p);
    let exec = exec(&raw.exec, p);
    let stores = super::store::resolve_stores(&raw, &secrets, p);
    if !p.0.is_empty() {
        return None;
    }
    // The explicit audience goes only to hosts the operator named: the
    // literal vault URLs of this file plus [auth] audience_hosts (never a
    // host chosen by a template over instance metadata or tags).
    if auth.audience.is_some() {
        let literal = vault.iter().chain(secrets.values().map(|s| &s.vault));
        for v in literal {
            if let VaultRef::Url(url) = v
                && let Some(host) = host_port(url)
            {
                auth.audience_hosts.push(host);
            }
        }
        auth.audience_hosts.sort();
        auth.audience_hosts.dedup();
    }
    Some(Config {
        source: source.to_path_buf(),
        base_dir,
        vault,
        agent,
        auth,
        tls,
        secrets,
        selections,
        files,
        stores,
        env,
        exec,
        fanouts,
    })
}

/// `host` or `host:port` (lowercase) of a vault URL, as `audience_hosts`
/// lists them.
pub fn host_port(url: &Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// Lexically normalise `path` joined onto `base` (no filesystem access, so
/// symlinks are not resolved): removes `.` and folds `..`.
pub fn absolutize(base: &Path, path: &str) -> PathBuf {
    let joined = base.join(path);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn duration(
    v: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
    p: &mut Problems,
) -> Duration {
    let Some(v) = v else { return default };
    match humantime::parse_duration(v.get_ref().trim()) {
        Ok(d) => d,
        Err(e) => {
            p.at(
                v,
                key,
                format!("expected a duration such as \"30s\", \"10m\" or \"1h 30m\" ({e})"),
            );
            default
        }
    }
}

fn positive(d: Duration, v: &Option<Spanned<String>>, key: &str, p: &mut Problems) {
    if let (true, Some(v)) = (d.is_zero(), v) {
        p.at(v, key, "expected a duration greater than zero");
    }
}

pub(super) fn positive_duration(
    v: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
    p: &mut Problems,
) -> Duration {
    let d = duration(v, key, default, p);
    positive(d, v, key, p);
    d
}

fn agent(raw: &RawAgent, base_dir: &Path, p: &mut Problems) -> AgentConfig {
    let default_templates = base_dir.join(DEFAULT_TEMPLATES_DIR);
    let templates_dir = match &raw.templates_dir {
        Some(d) if d.get_ref().trim().is_empty() => {
            p.at(
                d,
                "agent.templates_dir",
                "expected a directory path, found an empty string",
            );
            default_templates
        }
        Some(d) => absolutize(base_dir, d.get_ref()),
        None => default_templates,
    };
    AgentConfig {
        interval: positive_duration(&raw.interval, "agent.interval", DEFAULT_INTERVAL, p),
        jitter: duration(&raw.jitter, "agent.jitter", DEFAULT_JITTER, p),
        templates_dir,
        log_format: log_format(&raw.log_format, p),
        listen: listen(&raw.listen, p),
        deadline: positive_duration(&raw.deadline, "agent.deadline", DEFAULT_DEADLINE, p),
        concurrency: concurrency(&raw.concurrency, p),
        hook_timeout: positive_duration(
            &raw.hook_timeout,
            "agent.hook_timeout",
            DEFAULT_HOOK_TIMEOUT,
            p,
        ),
        cert_expiry_warning: duration(
            &raw.cert_expiry_warning,
            "agent.cert_expiry_warning",
            DEFAULT_CERT_EXPIRY_WARNING,
            p,
        ),
        keep_going: raw.keep_going.as_ref().is_some_and(|v| *v.get_ref()),
        once_wait: raw
            .once_wait
            .as_ref()
            .map(|_| duration(&raw.once_wait, "agent.once_wait", Duration::ZERO, p)),
        allow_remote_sync: raw.allow_remote_sync.as_ref().is_some_and(|v| *v.get_ref()),
    }
}

/// An environment variable name: letters, digits and `_`, not starting
/// with a digit (POSIX "portable" names; also safe on Windows).
fn is_env_name(s: &str) -> bool {
    is_identifier(s)
}

fn env(raw: &[RawEnvVar], p: &mut Problems) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::with_capacity(raw.len());
    for v in raw {
        let name = v.name.get_ref();
        if !is_env_name(name) {
            p.at(
                &v.name,
                format!("env.{name}"),
                "an environment variable name: letters, digits and _, not starting with a digit",
            );
            continue;
        }
        out.push(EnvVar {
            name: name.clone(),
            template: v.template.get_ref().clone(),
        });
    }
    out
}

fn exec(raw: &RawExec, p: &mut Problems) -> ExecConfig {
    let on_change = match raw.on_change.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "restart")) => OnChange::Restart,
        Some((_, "signal")) if cfg!(unix) => OnChange::Signal,
        Some((v, "signal")) => {
            p.at(
                v,
                "exec.on_change",
                "\"signal\" is not available on this platform; use \"restart\"",
            );
            OnChange::Restart
        }
        Some((v, _)) => {
            p.at(v, "exec.on_change", "expected \"restart\" or \"signal\"");
            OnChange::Restart
        }
    };
    let signal = match &raw.signal {
        None => DEFAULT_EXEC_SIGNAL.to_owned(),
        Some(v) => {
            let name = v.get_ref().trim().to_ascii_uppercase();
            let name = if name.starts_with("SIG") {
                name
            } else {
                format!("SIG{name}")
            };
            if EXEC_SIGNALS.contains(&name.as_str()) {
                name
            } else {
                p.at(
                    v,
                    "exec.signal",
                    format!("expected one of {}", EXEC_SIGNALS.join(", ")),
                );
                DEFAULT_EXEC_SIGNAL.to_owned()
            }
        }
    };
    ExecConfig {
        on_change,
        signal,
        stop_timeout: duration(
            &raw.stop_timeout,
            "exec.stop_timeout",
            DEFAULT_STOP_TIMEOUT,
            p,
        ),
    }
}

fn log_format(v: &Option<Spanned<String>>, p: &mut Problems) -> Option<LogFormat> {
    let v = v.as_ref()?;
    match v.get_ref().as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => {
            p.at(v, "agent.log_format", "expected \"text\" or \"json\"");
            None
        }
    }
}

fn listen(v: &Option<Spanned<String>>, p: &mut Problems) -> Option<SocketAddr> {
    let v = v.as_ref()?;
    match v.get_ref().trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.at(
                v,
                "agent.listen",
                "expected an IP address and port, e.g. \"127.0.0.1:9464\"",
            );
            None
        }
    }
}

fn concurrency(v: &Option<Spanned<i64>>, p: &mut Problems) -> usize {
    let Some(v) = v else {
        return DEFAULT_CONCURRENCY;
    };
    match usize::try_from(*v.get_ref()) {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => n,
        _ => {
            p.at(
                v,
                "agent.concurrency",
                format!("expected an integer from 1 to {MAX_CONCURRENCY}"),
            );
            DEFAULT_CONCURRENCY
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// An `http://` or `https://` endpoint URL. With `https_unless_loopback`,
/// plain http is accepted only for a loopback host.
fn endpoint(
    v: &Option<Spanned<String>>,
    key: &str,
    https_unless_loopback: bool,
    p: &mut Problems,
) -> Option<Url> {
    let v = v.as_ref()?;
    match Url::parse(v.get_ref().trim()) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => Some(u),
        Ok(u) if u.scheme() == "http" && (!https_unless_loopback || is_loopback(&u)) => Some(u),
        Ok(u) if u.scheme() == "http" => {
            p.at(
                v,
                key,
                "expected an https:// URL (http:// is accepted only for localhost/127.0.0.1)",
            );
            None
        }
        Ok(_) => {
            p.at(v, key, "expected an http:// or https:// URL");
            None
        }
        Err(e) => {
            p.at(v, key, format!("expected an http:// or https:// URL ({e})"));
            None
        }
    }
}

fn auth_method(raw: &RawAuth, p: &mut Problems) -> AuthMethod {
    let Some(v) = &raw.method else {
        return AuthMethod::Auto;
    };
    match v.get_ref().as_str() {
        "auto" => AuthMethod::Auto,
        "arc" => AuthMethod::Arc,
        "imds" => AuthMethod::Imds,
        "workload-identity" => AuthMethod::WorkloadIdentity,
        _ => {
            p.at(
                v,
                "auth.method",
                "expected one of \"auto\", \"arc\", \"imds\", \"workload-identity\"",
            );
            AuthMethod::Auto
        }
    }
}

fn non_empty(v: &Option<Spanned<String>>, key: &str, p: &mut Problems) -> Option<String> {
    let v = v.as_ref()?;
    let s = v.get_ref().trim();
    if s.is_empty() {
        p.at(v, key, "expected a non-empty string");
        return None;
    }
    Some(s.to_owned())
}

fn auth(raw: &RawAuth, base_dir: &Path, p: &mut Problems) -> AuthConfig {
    let method = auth_method(raw, p);
    let selectors: Vec<(&str, &Spanned<String>)> = [
        ("client_id", &raw.client_id),
        ("object_id", &raw.object_id),
        ("resource_id", &raw.resource_id),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    if method == AuthMethod::Arc {
        for (k, v) in &selectors {
            p.at(
                *v,
                format!("auth.{k}"),
                "not allowed with method = \"arc\": Arc has only the system-assigned identity",
            );
        }
    } else if let [_, rest @ ..] = selectors.as_slice() {
        for (k, v) in rest {
            p.at(
                *v,
                format!("auth.{k}"),
                "at most one of client_id, object_id, resource_id may be set",
            );
        }
    }
    if method == AuthMethod::WorkloadIdentity {
        for (k, v) in selectors.iter().filter(|(k, _)| *k != "client_id") {
            p.at(
                *v,
                format!("auth.{k}"),
                "workload identity selects the identity by client_id only",
            );
        }
    }
    let audience = raw
        .audience
        .as_ref()
        .and_then(|v| match Url::parse(v.get_ref().trim()) {
            Ok(_) => Some(v.get_ref().trim().to_owned()),
            Err(_) => {
                p.at(
                    v,
                    "auth.audience",
                    "expected the token audience as a URL, e.g. \"https://vault.azure.net\"",
                );
                None
            }
        });
    AuthConfig {
        method,
        user_assigned: user_assigned(raw, p),
        identity_endpoint: endpoint(&raw.identity_endpoint, "auth.identity_endpoint", false, p),
        imds_endpoint: endpoint(&raw.imds_endpoint, "auth.imds_endpoint", false, p),
        authority_host: endpoint(&raw.authority_host, "auth.authority_host", true, p),
        audience,
        test_arc_token_dir: raw
            .insecure_test_arc_token_dir
            .as_ref()
            .map(|d| absolutize(base_dir, d.get_ref())),
        arc_agent_user: non_empty(&raw.arc_agent_user, "auth.arc_agent_user", p),
        audience_hosts: raw
            .audience_hosts
            .as_ref()
            .map(|h| {
                h.get_ref()
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The one user-assigned identity selector (more than one is reported
/// above; the first written wins here).
fn user_assigned(raw: &RawAuth, p: &mut Problems) -> Option<UserAssigned> {
    let client_id = non_empty(&raw.client_id, "auth.client_id", p);
    let object_id = non_empty(&raw.object_id, "auth.object_id", p);
    let resource_id = non_empty(&raw.resource_id, "auth.resource_id", p);
    client_id
        .map(UserAssigned::ClientId)
        .or(object_id.map(UserAssigned::ObjectId))
        .or(resource_id.map(UserAssigned::ResourceId))
}

fn tls(raw: &RawTls, base_dir: &Path) -> TlsConfig {
    TlsConfig {
        ca_file: raw
            .ca_file
            .as_ref()
            .map(|f| absolutize(base_dir, f.get_ref())),
    }
}

/// A vault URL, or a template over instance metadata (checked with a
/// sample substitution; resolved each round). The rules and messages are
/// [`crate::vault::address`]'s.
pub(super) fn vault_ref(
    v: &Spanned<String>,
    key: &str,
    auth: &AuthConfig,
    p: &mut Problems,
) -> Option<VaultRef> {
    let text = v.get_ref().trim();
    let audience = auth.audience.as_deref();
    if vault_url::is_template(text) {
        return match vault_url::check_template(text, audience) {
            Ok(()) => Some(VaultRef::Template(text.to_owned())),
            Err(e) => {
                p.at(v, key, format!("invalid vault template: {e}"));
                None
            }
        };
    }
    match VaultUrl::parse(text, audience) {
        Ok(url) => Some(VaultRef::Url(url.into_url())),
        Err(e) => {
            p.at(v, key, e.to_string());
            None
        }
    }
}

pub(super) struct DefaultVault {
    pub(super) url: Option<VaultRef>,
    /// `vault` was written (even if invalid: then don't report twice).
    pub(super) declared: bool,
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn secrets(
    raw: &RawConfig,
    default: &DefaultVault,
    auth: &AuthConfig,
    p: &mut Problems,
) -> BTreeMap<String, SecretSpec> {
    let mut out = BTreeMap::new();
    for entry in &raw.secrets {
        let alias = entry.alias.get_ref();
        let key = format!("secrets.{alias}");
        if !is_identifier(alias) {
            p.at(&entry.alias, &key, "an alias must be an identifier usable in templates: letters, digits and _, not starting with a digit");
        }
        if let Some(spec) = secret(entry, &key, default, auth, p) {
            out.insert(alias.clone(), spec);
        }
    }
    out
}

fn secret(
    entry: &RawAlias,
    key: &str,
    default: &DefaultVault,
    auth: &AuthConfig,
    p: &mut Problems,
) -> Option<SecretSpec> {
    let raw = &entry.secret;
    let (name, version, vault, kind, include_root, public_only) = match raw {
        RawSecret::Name(n) => (Some(n), None, None, None, None, None),
        RawSecret::Table(t) => (
            t.name.as_ref(),
            t.version.as_ref(),
            t.vault.as_ref(),
            t.kind.as_ref(),
            t.include_root.as_ref(),
            t.public_only.as_ref(),
        ),
    };
    let version = version.and_then(|v| object_version(v, &format!("{key}.version"), p));
    let kind = secret_kind(kind, key, p);
    let (optional, fallback) = match raw {
        RawSecret::Name(_) => (false, None),
        RawSecret::Table(t) => (
            t.optional.as_ref().is_some_and(|v| *v.get_ref()),
            t.default.as_ref(),
        ),
    };
    if let (true, SecretKind::Certificate, RawSecret::Table(t)) = (optional, kind, raw)
        && let Some(v) = &t.optional
    {
        p.at(
            v,
            format!("{key}.optional"),
            "optional applies only to type = \"secret\" (a certificate has no default)",
        );
    }
    if let (false, Some(d)) = (optional, fallback) {
        p.at(
            d,
            format!("{key}.default"),
            "default applies only to optional secrets: add optional = true, or remove it",
        );
    }
    let name = match name {
        None => {
            p.at(
                &entry.alias,
                key,
                "missing name: write { name = \"<Key Vault object name>\", ... }",
            );
            None
        }
        Some(n) => {
            let short = matches!(raw, RawSecret::Name(_)).then_some(key);
            object_name(n, &format!("{key}.name"), short, p)
        }
    };
    if let Some(v) = include_root
        && kind != SecretKind::Certificate
    {
        p.at(
            v,
            format!("{key}.include_root"),
            "include_root applies only to certificates: add type = \"certificate\", or remove it",
        );
    }
    if let Some(v) = public_only
        && kind != SecretKind::Certificate
    {
        p.at(
            v,
            format!("{key}.public_only"),
            "public_only applies only to certificates (type = \"certificate\"): it reads the certificate without its private key",
        );
    }
    if let (Some(v), true) = (include_root, public_only.is_some_and(|v| *v.get_ref())) {
        p.at(
            v,
            format!("{key}.include_root"),
            "include_root needs the certificate's chain, which public_only certificates do not have (GET /certificates returns the leaf only)",
        );
    }
    let vault = match vault {
        Some(v) => vault_ref(v, &format!("{key}.vault"), auth, p),
        None if !default.declared => {
            p.at(&entry.alias, key, "no vault: set vault = \"https://...\" on this secret, or a top-level default vault");
            None
        }
        None => default.url.clone(),
    };
    Some(SecretSpec {
        alias: entry.alias.get_ref().clone(),
        name: name?,
        version,
        vault: vault?,
        kind,
        include_root: include_root.is_some_and(|v| *v.get_ref()),
        optional,
        default: fallback.map(|d| d.get_ref().clone()).unwrap_or_default(),
        public_only: public_only.is_some_and(|v| *v.get_ref()),
    })
}

fn secret_kind(kind: Option<&Spanned<String>>, key: &str, p: &mut Problems) -> SecretKind {
    match kind.map(|k| (k, k.get_ref().as_str())) {
        None | Some((_, "secret")) => SecretKind::Secret,
        Some((_, "certificate")) => SecretKind::Certificate,
        Some((_, "key")) => SecretKind::Key,
        Some((k, _)) => {
            p.at(
                k,
                format!("{key}.type"),
                "expected \"secret\", \"certificate\" or \"key\"",
            );
            SecretKind::Secret
        }
    }
}

/// Key Vault object names: 1-127 of `[0-9a-zA-Z-]`.
fn object_name(
    v: &Spanned<String>,
    key: &str,
    short_key: Option<&str>,
    p: &mut Problems,
) -> Option<String> {
    let s = v.get_ref();
    let ok = (1..=MAX_NAME_LEN).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        p.at(
            v,
            short_key.unwrap_or(key),
            format!(
                "expected a Key Vault object name: 1 to {MAX_NAME_LEN} letters, digits and dashes"
            ),
        );
        return None;
    }
    Some(s.clone())
}

/// A version is 32 hex characters; stored lowercase.
fn object_version(v: &Spanned<String>, key: &str, p: &mut Problems) -> Option<String> {
    let s = v.get_ref().trim();
    if s.len() != VERSION_LEN || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        p.at(v, key, format!("expected a Key Vault version: {VERSION_LEN} hex characters (omit it for the latest version)"));
        return None;
    }
    Some(s.to_ascii_lowercase())
}
