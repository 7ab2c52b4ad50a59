//! Rendering: tera templates (autoescape off, strict undefined) over the
//! context `secrets`, `meta`, `certs`, `instance`, with the filters of
//! SPEC.md. Render touches neither the network nor the disk (templates are
//! read once, at [`Renderer::compile`]). Errors name the destination file and
//! template line and never carry a secret value (see `render::redact`).
//!
//! Context shape (SPEC.md "Template context"):
//!
//! * `secrets.<alias>` — the value string.
//! * `meta.<alias>` — `name`, `version`, `tags` (map), `present` (false
//!   when an `optional` secret is missing or disabled and `secrets.<alias>`
//!   is its `default`), and, only when Key Vault returned them,
//!   `content_type`, `updated`, `expires` (RFC 3339, UTC, seconds). Absent
//!   keys are undefined: use `| default(value="")`.
//! * `certs.<alias>` — `key`, `cert`, `chain`, `fullchain`, `pfx_base64`,
//!   `thumbprint`, `not_after`, `subject`, `sans` (array), `serial`.
//! * `instance` — the instance metadata, when fetched.
//! * `selected.<selection>` — a list of `{name, value, version,
//!   content_type, tags, updated, expires}` sorted by name (`name` without
//!   the prefix with `strip_prefix`); absent optional keys as in `meta`.
//! * `keys.<alias>` — `pem` (SubjectPublicKeyInfo), `jwk` (JSON text of
//!   the public JWK), `kid`, `kty`.
//!
//! `[env]` values (`kvsync exec`) are templates over the same context,
//! compiled and checked with the files' and rendered by [`Renderer::render_env`].
//!
//! tera keeps its own copies of context strings, which are not zeroized when
//! the context is dropped; kvsync's output buffers are ([`SecretBytes`]).

mod decode;
pub mod filters;
pub(crate) mod redact;
pub mod refs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine;
use secrecy::ExposeSecret;
use serde::Serialize;
use tera::Tera;

use crate::certs::CertMaterial;
use crate::config::{Config, Decode, FileSource, FileSpec, OutputFormat, SecretKind};
use crate::secret::SecretBytes;
use crate::vault::SecretBundle;

use refs::Root;

/// Fields of `meta.<alias>`.
pub const META_FIELDS: &[&str] = &[
    "name",
    "version",
    "content_type",
    "updated",
    "expires",
    "tags",
    "present",
];
/// Fields of `certs.<alias>`.
pub const CERT_FIELDS: &[&str] = &[
    "key",
    "cert",
    "chain",
    "fullchain",
    "pfx_base64",
    "thumbprint",
    "not_after",
    "subject",
    "sans",
    "serial",
];

/// Fields of `keys.<alias>`.
pub const KEY_FIELDS: &[&str] = &["pem", "jwk", "kid", "kty"];
/// Fields of `certs.<alias>` that need the private key or the chain, absent
/// for `public_only` certificates.
pub const PRIVATE_CERT_FIELDS: &[&str] = &["key", "chain", "fullchain", "pfx_base64"];

/// One secret of a selection, as the round found it.
#[derive(Clone, Debug)]
pub struct Selected {
    /// The name shown to templates and used for fan-out files (the prefix
    /// stripped when the selection asks for it).
    pub name: String,
    pub bundle: SecretBundle,
}

/// The public part of a `type = "key"` object.
#[derive(Clone, Debug)]
pub struct KeyMaterial {
    pub kid: String,
    pub key: crate::certs::PublicKey,
}

/// The tera context of one round ([`Renderer::prepare`]); `None` if it
/// could not be built (each template file then fails with that).
pub struct Prepared(Option<tera::Context>);

/// Everything a template may see in one round.
#[derive(Default)]
pub struct Context {
    pub secrets: BTreeMap<String, SecretBundle>,
    pub certs: BTreeMap<String, CertMaterial>,
    /// HIMDS/IMDS `compute` metadata, when fetched.
    pub instance: Option<serde_json::Value>,
    /// Optional secrets that were missing or disabled: their entry in
    /// `secrets` holds the configured default (`meta.<alias>.present` = false).
    pub absent: BTreeSet<String>,
    /// `[selections]` by alias, each sorted by name.
    pub selected: BTreeMap<String, Vec<Selected>>,
    /// `type = "key"` objects by alias.
    pub keys: BTreeMap<String, KeyMaterial>,
}

#[derive(Debug, thiserror::Error)]
#[error("{destination}: template {template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default(), destination = destination.display())]
pub struct RenderError {
    /// The destination file whose template failed.
    pub destination: PathBuf,
    /// Template file path or `contents` (inline).
    pub template: String,
    pub line: Option<usize>,
    /// What went wrong, never containing a secret value.
    pub message: String,
}

enum Kind {
    /// Name of the compiled template in `Renderer::tera`, and its source
    /// (kept for error sanitising; templates are configuration, not secret).
    Template { name: String, source: String },
    Object {
        alias: String,
        format: OutputFormat,
        /// `format = "pfx"`: alias of the password secret, and 3DES/SHA-1.
        pfx_password: Option<String>,
        pfx_legacy: bool,
        decode: Option<Decode>,
    },
}

struct Entry {
    destination: PathBuf,
    /// Template path, `contents`, or `secret <alias>`.
    label: String,
    kind: Kind,
}

/// Compiled templates for every `[[file]]` of a config.
pub struct Renderer {
    tera: Tera,
    files: Vec<Entry>,
    /// `[env]` templates, in config order (destination = the variable name).
    env: Vec<Entry>,
    uses_instance: bool,
}

impl Renderer {
    /// Read and compile every template; reject references to aliases not
    /// declared in `[secrets]`. Returns every problem found, not just the
    /// first.
    pub fn compile(config: &Config) -> Result<Self, Vec<RenderError>> {
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&str>::new());
        filters::register(&mut tera);
        let mut files = Vec::with_capacity(config.files.len());
        let mut errors = Vec::new();
        let mut uses_instance = false;
        for (i, spec) in config.files.iter().enumerate() {
            let entry = match Entry::load(i, spec) {
                Ok(entry) => entry,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match &entry.kind {
                Kind::Object { alias, format, .. } => {
                    errors.extend(check_object(config, &entry, alias, *format));
                }
                Kind::Template { source, .. } => {
                    errors.extend(check_refs(config, &entry, source));
                }
            }
            files.push(entry);
        }
        let mut env = Vec::with_capacity(config.env.len());
        for var in &config.env {
            let entry = Entry {
                destination: PathBuf::from(format!("[env] {}", var.name)),
                label: "value".to_owned(),
                kind: Kind::Template {
                    name: format!("env:{}", var.name),
                    source: var.template.clone(),
                },
            };
            errors.extend(check_refs(config, &entry, &var.template));
            env.push(entry);
        }
        errors.extend(add_templates(&mut tera, files.iter().chain(&env)));
        for entry in files.iter().chain(&env) {
            if let Kind::Template { name, .. } = &entry.kind {
                uses_instance |= tera
                    .get_template_variables(name)
                    .is_ok_and(|v| v.contains("instance"));
            }
        }
        if errors.is_empty() {
            Ok(Renderer {
                tera,
                files,
                env,
                uses_instance,
            })
        } else {
            Err(errors)
        }
    }

    /// Render file number `index` of the config.
    pub fn render(&self, index: usize, ctx: &Context) -> Result<SecretBytes, RenderError> {
        self.render_prepared(index, ctx, &self.prepare(ctx))
    }

    /// The template context of one round, built once for all its files:
    /// building it per file made a round cost files × secrets.
    pub fn prepare(&self, ctx: &Context) -> Prepared {
        Prepared(tera_context(ctx).ok())
    }

    /// Render file number `index` with a context from [`Renderer::prepare`]
    /// over the same `ctx`.
    pub fn render_prepared(
        &self,
        index: usize,
        ctx: &Context,
        prepared: &Prepared,
    ) -> Result<SecretBytes, RenderError> {
        let Some(entry) = self.files.get(index) else {
            return Err(RenderError {
                destination: PathBuf::new(),
                template: String::new(),
                line: None,
                message: format!("internal: no file number {index} in this config"),
            });
        };
        match &entry.kind {
            Kind::Template { name, source } => {
                let Some(tctx) = &prepared.0 else {
                    return Err(
                        entry.error(None, "internal: cannot build the template context".into())
                    );
                };
                match self.tera.render(name, tctx) {
                    Ok(out) => Ok(SecretBytes::new(out.into_bytes())),
                    Err(e) => Err(render_error(entry, &e, source, ctx)),
                }
            }
            Kind::Object {
                alias,
                format,
                pfx_password,
                pfx_legacy,
                decode,
            } => {
                let pfx = PfxSettings {
                    password_alias: pfx_password.as_deref(),
                    legacy: *pfx_legacy,
                };
                if let Some(kind) = decode {
                    return decoded(entry, alias, *kind, ctx);
                }
                object(entry, alias, *format, pfx, ctx)
            }
        }
    }

    /// Render every `[env]` value (name, value) in config order; all
    /// failures are collected. Values are secret: never log them.
    pub fn render_env(
        &self,
        ctx: &Context,
        prepared: &Prepared,
    ) -> Result<Vec<(String, secrecy::SecretString)>, Vec<RenderError>> {
        let mut out = Vec::with_capacity(self.env.len());
        let mut errors = Vec::new();
        for entry in &self.env {
            let Kind::Template { name, source } = &entry.kind else {
                continue;
            };
            let var = name.trim_start_matches("env:").to_owned();
            let Some(tctx) = &prepared.0 else {
                errors
                    .push(entry.error(None, "internal: cannot build the template context".into()));
                continue;
            };
            match self.tera.render(name, tctx) {
                Ok(value) => out.push((var, secrecy::SecretString::from(value))),
                Err(e) => errors.push(render_error(entry, &e, source, ctx)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Whether the config has `[env]` entries.
    pub fn has_env(&self) -> bool {
        !self.env.is_empty()
    }

    /// Whether any template refers to `instance`.
    pub fn uses_instance(&self) -> bool {
        self.uses_instance
    }

    /// Number of `[[file]]` entries compiled.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Entry {
    /// The entry for file number `i`; reads a template file (once).
    fn load(i: usize, spec: &FileSpec) -> Result<Entry, RenderError> {
        let (label, source) = match &spec.source {
            FileSource::Template(path) => match std::fs::read_to_string(path) {
                Ok(text) => (path.display().to_string(), text),
                Err(e) => {
                    return Err(RenderError {
                        destination: spec.path.clone(),
                        template: path.display().to_string(),
                        line: None,
                        message: format!("cannot read the template file: {e}"),
                    });
                }
            },
            FileSource::Inline(text) => ("contents".to_string(), text.clone()),
            FileSource::Object { alias, format } => {
                return Ok(Entry {
                    destination: spec.path.clone(),
                    label: format!("secret `{alias}`"),
                    kind: Kind::Object {
                        alias: alias.clone(),
                        format: *format,
                        pfx_password: spec.pfx_password.clone(),
                        pfx_legacy: spec.pfx_legacy,
                        decode: spec.decode,
                    },
                });
            }
        };
        Ok(Entry {
            destination: spec.path.clone(),
            label,
            kind: Kind::Template {
                name: format!("file{i}"),
                source,
            },
        })
    }

    fn error(&self, line: Option<usize>, message: String) -> RenderError {
        RenderError {
            destination: self.destination.clone(),
            template: self.label.clone(),
            line,
            message,
        }
    }
}

fn check_object(config: &Config, e: &Entry, alias: &str, format: OutputFormat) -> Vec<RenderError> {
    match config.secrets.get(alias) {
        None => vec![e.error(
            None,
            format!("secret `{alias}` is not declared in [secrets]"),
        )],
        Some(s) if s.kind == SecretKind::Key && format != OutputFormat::Pem => vec![e.error(
            None,
            format!("`{alias}` is a key: the only format of a key is \"pem\""),
        )],
        Some(s) if s.kind == SecretKind::Key => Vec::new(),
        Some(s) if format != OutputFormat::Raw && s.kind != SecretKind::Certificate => {
            vec![e.error(
                None,
                format!(
                    "format {format:?} needs a certificate, but `{alias}` is not declared with type = \"certificate\""
                ),
            )]
        }
        Some(_) => Vec::new(),
    }
}

/// Static check of `secrets.X` / `meta.X.f` / `certs.X.f` references.
fn check_refs(config: &Config, e: &Entry, source: &str) -> Vec<RenderError> {
    let mut out = Vec::new();
    for r in refs::scan(source) {
        let root = r.root.name();
        let alias = &r.alias;
        if r.root == Root::Selected {
            if !config.selections.contains_key(alias) {
                out.push(e.error(
                    Some(r.line),
                    format!("`selected.{alias}`: `{alias}` is not declared in [selections]"),
                ));
            }
            continue;
        }
        let Some(spec) = config.secrets.get(alias) else {
            out.push(e.error(
                Some(r.line),
                format!("`{root}.{alias}`: `{alias}` is not declared in [secrets]"),
            ));
            continue;
        };
        let fields = match r.root {
            Root::Secrets | Root::Selected => None,
            Root::Meta => Some(META_FIELDS),
            Root::Certs => Some(CERT_FIELDS),
            Root::Keys => Some(KEY_FIELDS),
        };
        if r.root == Root::Keys && spec.kind != SecretKind::Key {
            out.push(e.error(
                Some(r.line),
                format!("`keys.{alias}`: `{alias}` is not declared with type = \"key\""),
            ));
        }
        if matches!(r.root, Root::Secrets | Root::Meta) && spec.kind == SecretKind::Key
            || matches!(r.root, Root::Secrets | Root::Meta)
                && spec.kind == SecretKind::Certificate
                && spec.public_only
        {
            out.push(e.error(
                Some(r.line),
                format!("`{root}.{alias}`: `{alias}` is read without its secret (type = \"key\" or public_only); use `{}.{alias}`", if spec.kind == SecretKind::Key { "keys" } else { "certs" }),
            ));
        }
        if let (Root::Certs, true, Some(f)) = (r.root, spec.public_only, &r.field)
            && PRIVATE_CERT_FIELDS.contains(&f.as_str())
        {
            out.push(e.error(
                Some(r.line),
                format!("`certs.{alias}.{f}`: `{alias}` is public_only: GET /certificates gives the leaf only, without private key or chain"),
            ));
        }
        if r.root == Root::Certs && spec.kind != SecretKind::Certificate {
            out.push(e.error(
                Some(r.line),
                format!("`certs.{alias}`: `{alias}` is not declared with type = \"certificate\""),
            ));
        }
        if let (Some(fields), Some(f)) = (fields, &r.field)
            && !fields.contains(&f.as_str())
        {
            out.push(e.error(
                Some(r.line),
                format!(
                    "`{root}.{alias}.{f}`: unknown field `{f}`; expected one of {}",
                    fields.join(", ")
                ),
            ));
        }
    }
    out
}

/// Add every template in one batch: tera re-checks all its templates on
/// each add, so adding them one by one costs files². Only when the batch
/// fails are they added one by one, to name each broken template.
fn add_templates<'a>(
    tera: &mut Tera,
    entries: impl Iterator<Item = &'a Entry> + Clone,
) -> Vec<RenderError> {
    let templates = entries.filter_map(|e| match &e.kind {
        Kind::Template { name, source } => Some((e, name.as_str(), source.as_str())),
        Kind::Object { .. } => None,
    });
    if tera
        .add_raw_templates(templates.clone().map(|(_, n, s)| (n, s)))
        .is_ok()
    {
        return Vec::new();
    }
    let mut errors = Vec::new();
    for (entry, name, source) in templates {
        if let Err(e) = tera.add_raw_template(name, source) {
            errors.extend(compile_errors(entry, &e));
        }
    }
    errors
}

/// tera build errors → one [`RenderError`] per reported problem.
fn compile_errors(e: &Entry, err: &tera::Error) -> Vec<RenderError> {
    match err.kind() {
        tera::ErrorKind::SyntaxError(r) | tera::ErrorKind::RenderingError(r) => {
            vec![e.error(Some(r.span().start_line), r.message().to_string())]
        }
        _ => {
            // Validation errors (unknown filter/test/function) arrive as one
            // message of rustc-style reports: "error: MSG\n --> name:L:C".
            let text = err.to_string();
            let mut out = Vec::new();
            let mut msg: Option<String> = None;
            for line in text.lines() {
                if let Some(m) = line.strip_prefix("error: ") {
                    if let Some(prev) = msg.replace(m.to_string()) {
                        out.push(e.error(None, prev));
                    }
                } else if let Some(loc) = line.trim_start().strip_prefix("--> ")
                    && let Some(m) = msg.take()
                {
                    let n = loc.rsplit(':').nth(1).and_then(|l| l.parse().ok());
                    out.push(e.error(n, m));
                }
            }
            if let Some(m) = msg {
                out.push(e.error(None, m));
            }
            if out.is_empty() {
                out.push(e.error(None, text));
            }
            out
        }
    }
}

fn render_error(e: &Entry, err: &tera::Error, source: &str, ctx: &Context) -> RenderError {
    let (line, raw) = match err.kind() {
        tera::ErrorKind::RenderingError(r) | tera::ErrorKind::SyntaxError(r) => {
            (Some(r.span().start_line), r.message().to_string())
        }
        _ => (None, err.to_string()),
    };
    let needles = redact::Needles::from_context(ctx);
    // Scrub first: a secret containing a quote character would otherwise
    // be split by the sanitizer's quoting and leak a fragment.
    let message = redact::sanitize(&needles.scrub(&raw), source);
    e.error(line, message)
}

#[derive(Serialize)]
struct MetaView<'a> {
    name: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    tags: &'a BTreeMap<String, String>,
    present: bool,
}

#[derive(Serialize)]
struct CertView<'a> {
    key: &'a str,
    cert: &'a str,
    chain: &'a str,
    fullchain: &'a str,
    pfx_base64: &'a str,
    thumbprint: &'a str,
    not_after: &'a str,
    subject: &'a str,
    sans: &'a [String],
    serial: &'a str,
}

#[derive(Serialize)]
struct SelectedView<'a> {
    name: &'a str,
    value: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    tags: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
}

#[derive(Serialize)]
struct KeyView<'a> {
    pem: &'a str,
    jwk: &'a str,
    kid: &'a str,
    kty: &'a str,
}

/// Unix seconds → RFC 3339 (UTC, seconds precision); `None` outside
/// 1970..=9999 (`crate::time`).
pub fn rfc3339(unix: i64) -> Option<String> {
    crate::time::rfc3339(unix)
}

fn tera_context(ctx: &Context) -> Result<tera::Context, tera::Error> {
    let secrets: BTreeMap<&str, &str> = ctx
        .secrets
        .iter()
        .map(|(k, b)| (k.as_str(), b.value.expose_secret()))
        .collect();
    let meta: BTreeMap<&str, MetaView<'_>> = ctx
        .secrets
        .iter()
        .map(|(k, b)| {
            let view = MetaView {
                name: &b.name,
                version: &b.version,
                content_type: b.content_type.as_deref(),
                updated: b.updated.and_then(rfc3339),
                expires: b.expires.and_then(rfc3339),
                tags: &b.tags,
                present: !ctx.absent.contains(k),
            };
            (k.as_str(), view)
        })
        .collect();
    let certs: BTreeMap<&str, CertView<'_>> = ctx
        .certs
        .iter()
        .map(|(k, c)| {
            let view = CertView {
                key: c.key_pem.expose_secret(),
                cert: &c.cert_pem,
                chain: &c.chain_pem,
                fullchain: &c.fullchain_pem,
                pfx_base64: c.pfx_base64.expose_secret(),
                thumbprint: &c.thumbprint,
                not_after: &c.not_after,
                subject: &c.subject,
                sans: &c.sans,
                serial: &c.serial,
            };
            (k.as_str(), view)
        })
        .collect();
    let selected: BTreeMap<&str, Vec<SelectedView<'_>>> = ctx
        .selected
        .iter()
        .map(|(k, list)| {
            let views = list
                .iter()
                .map(|s| SelectedView {
                    name: &s.name,
                    value: s.bundle.value.expose_secret(),
                    version: &s.bundle.version,
                    content_type: s.bundle.content_type.as_deref(),
                    tags: &s.bundle.tags,
                    updated: s.bundle.updated.and_then(rfc3339),
                    expires: s.bundle.expires.and_then(rfc3339),
                })
                .collect();
            (k.as_str(), views)
        })
        .collect();
    let keys: BTreeMap<&str, KeyView<'_>> = ctx
        .keys
        .iter()
        .map(|(k, m)| {
            let view = KeyView {
                pem: &m.key.pem,
                jwk: &m.key.jwk,
                kid: &m.kid,
                kty: &m.key.kty,
            };
            (k.as_str(), view)
        })
        .collect();
    let mut t = tera::Context::new();
    t.insert_value("selected", tera::Value::try_from_serializable(&selected)?);
    t.insert_value("keys", tera::Value::try_from_serializable(&keys)?);
    t.insert_value("secrets", tera::Value::try_from_serializable(&secrets)?);
    t.insert_value("meta", tera::Value::try_from_serializable(&meta)?);
    t.insert_value("certs", tera::Value::try_from_serializable(&certs)?);
    if let Some(instance) = &ctx.instance {
        t.insert_value("instance", tera::Value::try_from_serializable(instance)?);
    }
    Ok(t)
}

/// How a `format = "pfx"` file is written.
#[derive(Clone, Copy)]
struct PfxSettings<'a> {
    password_alias: Option<&'a str>,
    legacy: bool,
}

/// The PFX of `c`: the no-password one as normalised, or one rebuilt with
/// the password from another secret and/or the legacy algorithms.
fn pfx_bytes(
    e: &Entry,
    alias: &str,
    c: &CertMaterial,
    pfx: PfxSettings<'_>,
    ctx: &Context,
) -> Result<Vec<u8>, RenderError> {
    let password = match pfx.password_alias {
        None => None,
        Some(pw_alias) => Some(ctx.secrets.get(pw_alias).ok_or_else(|| {
            e.error(
                None,
                format!("the PFX password secret `{pw_alias}` was not fetched this round"),
            )
        })?),
    };
    if password.is_none() && !pfx.legacy {
        return base64::engine::general_purpose::STANDARD
            .decode(c.pfx_base64.expose_secret().trim())
            .map_err(|_| e.error(None, format!("the PFX of `{alias}` is not valid base64")));
    }
    let password = password.map(|b| b.value.expose_secret());
    crate::certs::build_pfx(c, password, pfx.legacy)
        .map_err(|err| e.error(None, format!("cannot build the PFX of `{alias}`: {err}")))
}

/// `secret = alias` with `decode`: the bytes the secret's text encodes.
fn decoded(
    e: &Entry,
    alias: &str,
    kind: Decode,
    ctx: &Context,
) -> Result<SecretBytes, RenderError> {
    let b = ctx
        .secrets
        .get(alias)
        .ok_or_else(|| e.error(None, format!("secret `{alias}` was not fetched this round")))?;
    decode::decode(kind, b.value.expose_secret()).map_err(|why| {
        e.error(
            None,
            format!(
                "secret `{alias}` (Key Vault secret '{}', version {}) is {why}",
                b.name, b.version
            ),
        )
    })
}

/// The bytes a fan-out file of a selection holds: the value, or the bytes
/// it encodes.
pub fn selected_bytes(s: &Selected, decode: Option<Decode>) -> Result<SecretBytes, String> {
    let value = s.bundle.value.expose_secret();
    match decode {
        None => Ok(SecretBytes::new(value.as_bytes().to_vec())),
        Some(kind) => decode::decode(kind, value).map_err(|why| {
            format!(
                "Key Vault secret '{}' (version {}) is {why}",
                s.bundle.name, s.bundle.version
            )
        }),
    }
}

/// `secret = alias`, `format = ...` files: the object itself, no template.
fn object(
    e: &Entry,
    alias: &str,
    format: OutputFormat,
    pfx: PfxSettings<'_>,
    ctx: &Context,
) -> Result<SecretBytes, RenderError> {
    if format == OutputFormat::Raw {
        let b = ctx
            .secrets
            .get(alias)
            .ok_or_else(|| e.error(None, format!("secret `{alias}` was not fetched this round")))?;
        return Ok(SecretBytes::new(
            b.value.expose_secret().as_bytes().to_vec(),
        ));
    }
    if let Some(k) = ctx.keys.get(alias) {
        return Ok(SecretBytes::new(k.key.pem.as_bytes().to_vec()));
    }
    let c = ctx.certs.get(alias).ok_or_else(|| {
        e.error(
            None,
            format!("`{alias}` is not available as a certificate or key this round"),
        )
    })?;
    let bytes = match format {
        OutputFormat::Pem => {
            let key = c.key_pem.expose_secret();
            let mut out = Vec::with_capacity(key.len() + c.fullchain_pem.len() + 1);
            out.extend_from_slice(key.as_bytes());
            if !key.ends_with('\n') {
                out.push(b'\n');
            }
            out.extend_from_slice(c.fullchain_pem.as_bytes());
            out
        }
        OutputFormat::Key => c.key_pem.expose_secret().as_bytes().to_vec(),
        OutputFormat::Cert => c.cert_pem.as_bytes().to_vec(),
        OutputFormat::Chain => c.chain_pem.as_bytes().to_vec(),
        OutputFormat::Fullchain => c.fullchain_pem.as_bytes().to_vec(),
        OutputFormat::Pfx => pfx_bytes(e, alias, c, pfx, ctx)?,
        OutputFormat::Raw => Vec::new(),
    };
    Ok(SecretBytes::new(bytes))
}
