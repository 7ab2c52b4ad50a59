//! Stage two for `[[file]]` tables: destination paths, the content source
//! (template file, inline template or whole object), modes, owner/group and
//! hooks. Owner and group names are looked up in the host's user database
//! (`getpwnam`/`getgrnam`); nothing else outside the config text is read.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use toml::Spanned;

use std::time::Duration;

use super::raw::{Problem, RawConfig, RawFile, RawFileEntry};
use super::resolve::{Problems, absolutize, positive_duration};
use super::{
    AgentConfig, DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, FileSource, FileSpec, OutputFormat,
    SecretKind, SecretSpec,
};
use crate::hooks::{Hook, HookCommand};
use crate::platform::acl::{self, AclEntry};

/// Highest permission bits `chmod` accepts (setuid, setgid, sticky, rwx×3).
pub const MAX_MODE: u32 = 0o7777;
/// `(uid_t)-1` / `(gid_t)-1` mean "leave unchanged" to chown(2): not an id.
const ID_UNCHANGED: u32 = u32::MAX;

/// Resolve every `[[file]]`; duplicate destinations are errors.
pub fn resolve_files(
    raw: &RawConfig,
    agent: &AgentConfig,
    base_dir: &Path,
    secrets: &BTreeMap<String, SecretSpec>,
    p: &mut Problems,
) -> Vec<FileSpec> {
    let mut out: Vec<(&RawFileEntry, FileSpec)> = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for entry in &raw.files {
        let cx = FileCx {
            key: format!("file[{}]", entry.index),
            entry,
            raw,
            secrets,
        };
        let Some(spec) = cx.resolve(agent, base_dir, p) else {
            continue;
        };
        if let Some(first) = seen.get(&spec.path) {
            let span = entry.file.path.as_ref().map(Spanned::span);
            p.push(Problem::new(
                span,
                format!("{}.path", cx.key),
                format!("{} is already the destination of file[{first}]; each file may be written by one [[file]] only", spec.path.display()),
            ));
            continue;
        }
        seen.insert(spec.path.clone(), entry.index);
        out.push((entry, spec));
    }
    check_rollback_groups(&out, p);
    check_hook_timeout_groups(&out, p);
    out.into_iter().map(|(_, spec)| spec).collect()
}

/// `rollback` is a property of a hook group: every file sharing an
/// `on_change` command must say the same, and it needs a hook.
fn check_rollback_groups(files: &[(&RawFileEntry, FileSpec)], p: &mut Problems) {
    let mut first: HashMap<&HookCommand, (usize, bool)> = HashMap::new();
    for (entry, spec) in files {
        let key = format!("file[{}].rollback", entry.index);
        let span = entry.file.rollback.as_ref().map(Spanned::span);
        let Some(command) = spec.on_change.as_ref().map(|h| &h.command) else {
            if spec.rollback {
                p.push(Problem::new(span, key, "rollback needs an on_change hook: it restores the previous files when that hook fails"));
            }
            continue;
        };
        match first.get(command) {
            None => {
                first.insert(command, (entry.index, spec.rollback));
            }
            Some((index, want)) if *want != spec.rollback => {
                let span = span.or_else(|| Some(entry.span.clone()));
                p.push(Problem::new(span, key, format!("file[{index}] has the same on_change hook with rollback = {want}; every file of a hook group must agree (set rollback = {want} here, or change both)")));
            }
            Some(_) => {}
        }
    }
}

/// `hook_timeout` is a property of a hook group too: files sharing an
/// `on_change` command agree on it (else the group's one run has no single
/// timeout).
fn check_hook_timeout_groups(files: &[(&RawFileEntry, FileSpec)], p: &mut Problems) {
    let mut first: HashMap<&HookCommand, (usize, Option<Duration>)> = HashMap::new();
    for (entry, spec) in files {
        let Some(hook) = &spec.on_change else {
            continue;
        };
        match first.get(&hook.command) {
            None => {
                first.insert(&hook.command, (entry.index, hook.timeout));
            }
            Some((index, want)) if *want != hook.timeout => {
                let span = entry
                    .file
                    .hook_timeout
                    .as_ref()
                    .map(Spanned::span)
                    .or_else(|| Some(entry.span.clone()));
                let want = want.map_or_else(
                    || "none (the [agent] default)".to_owned(),
                    |d| humantime::format_duration(d).to_string(),
                );
                p.push(Problem::new(span, format!("file[{}].hook_timeout", entry.index), format!("file[{index}] has the same on_change hook with hook_timeout = {want}; every file of a hook group must agree")));
            }
            Some(_) => {}
        }
    }
}

/// A hook value (`on_change`, `verify`): a string (run by the platform
/// shell) or a non-empty array of strings (argv, no shell). Empty strings
/// are errors (omitting the key means `absent`).
pub(super) fn hook_value(v: &toml::Value, absent: &str) -> Result<Hook, String> {
    match v {
        toml::Value::String(s) if s.trim().is_empty() => Err(format!(
            "expected a command, found an empty string (omit the key for {absent})"
        )),
        toml::Value::String(s) => Ok(Hook::shell(s.clone())),
        toml::Value::Array(items) => {
            let argv: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect();
            match argv {
                None => {
                    Err("expected an array of strings (program, then its arguments)".to_owned())
                }
                Some(a) if a.first().is_none_or(|prog| prog.trim().is_empty()) => Err(format!(
                    "expected a program as the first element, found an empty array or name (omit the key for {absent})"
                )),
                Some(a) => Ok(Hook::argv(a)),
            }
        }
        other => Err(format!(
            "expected a command string or an array of strings, found {}",
            other.type_str()
        )),
    }
}

struct FileCx<'a> {
    key: String,
    entry: &'a RawFileEntry,
    raw: &'a RawConfig,
    secrets: &'a BTreeMap<String, SecretSpec>,
}

impl FileCx<'_> {
    /// A hook key (`on_change`, `verify`): a string (run by the platform
    /// shell) or a non-empty array of strings (argv, no shell). Empty
    /// strings are errors (omitting the key means `absent`).
    fn command(
        &self,
        v: &Option<Spanned<toml::Value>>,
        field: &str,
        absent: &str,
        timeout: Option<Duration>,
        p: &mut Problems,
    ) -> Option<Hook> {
        let v = v.as_ref()?;
        let hook = hook_value(v.get_ref(), absent);
        match hook {
            Ok(h) => Some(h.with_timeout(timeout)),
            Err(msg) => {
                p.at(v, self.k(field), msg);
                None
            }
        }
    }

    /// `acl`: Windows only; each entry `ACCOUNT:R|M|F`.
    fn acl(&self, f: &RawFile, p: &mut Problems) -> Vec<AclEntry> {
        let Some(v) = &f.acl else {
            return Vec::new();
        };
        if !cfg!(windows) {
            p.at(
                v,
                self.k("acl"),
                format!(
                    "acl applies on Windows only; on this platform use {}",
                    crate::platform::protection_keys()
                ),
            );
            return Vec::new();
        }
        let Some(items) = v.get_ref().as_array() else {
            p.at(
                v,
                self.k("acl"),
                format!(
                    "expected an array of \"ACCOUNT:R|M|F\" strings, found {}",
                    v.get_ref().type_str()
                ),
            );
            return Vec::new();
        };
        if items.is_empty() {
            p.at(v, self.k("acl"), "expected at least one entry (an empty DACL would lock everyone out; omit the key for SYSTEM and Administrators only)");
        }
        let mut out = Vec::new();
        for item in items {
            match item
                .as_str()
                .ok_or_else(|| "expected a string".to_owned())
                .and_then(acl::parse_entry)
            {
                Ok(e) => out.push(e),
                Err(msg) => p.at(v, self.k("acl"), msg),
            }
        }
        out
    }

    /// Unix protection keys on Windows: errors naming `acl`.
    fn unix_keys_on_windows(&self, f: &RawFile, p: &mut Problems) {
        if !cfg!(windows) {
            return;
        }
        for (name, v) in [
            ("mode", &f.mode),
            ("owner", &f.owner),
            ("group", &f.group),
            ("dir_mode", &f.dir_mode),
        ] {
            if let Some(v) = v {
                p.at(
                    v,
                    self.k(name),
                    format!("{name} is not supported on Windows; use acl = [\"ACCOUNT:R\", ...] (a protected DACL; default SYSTEM and Administrators full control)"),
                );
            }
        }
    }

    fn k(&self, field: &str) -> String {
        format!("{}.{field}", self.key)
    }

    fn resolve(&self, agent: &AgentConfig, base_dir: &Path, p: &mut Problems) -> Option<FileSpec> {
        let f = &self.entry.file;
        let path = match &f.path {
            None => {
                p.push(Problem::new(
                    Some(self.entry.span.clone()),
                    self.k("path"),
                    "missing: every [[file]] needs path = \"/destination/file\"",
                ));
                None
            }
            Some(v) if v.get_ref().trim().is_empty() => {
                p.at(
                    v,
                    self.k("path"),
                    "expected a destination path, found an empty string",
                );
                None
            }
            Some(v)
                if v.get_ref().ends_with('/')
                    || v.get_ref().ends_with("/.")
                    || v.get_ref().ends_with("/..") =>
            {
                p.at(
                    v,
                    self.k("path"),
                    "expected a file path, found a directory (trailing /)",
                );
                None
            }
            Some(v) => Some(absolutize(base_dir, v.get_ref())),
        };
        let source = self.source(f, &agent.templates_dir, p);
        self.unix_keys_on_windows(f, p);
        let (file_mode, dir_mode, owner, group) = if cfg!(windows) {
            (DEFAULT_FILE_MODE, DEFAULT_DIR_MODE, Ok(None), Ok(None))
        } else {
            (
                mode(&f.mode, &self.k("mode"), DEFAULT_FILE_MODE, p),
                mode(&f.dir_mode, &self.k("dir_mode"), DEFAULT_DIR_MODE, p),
                id(&f.owner, &self.k("owner"), IdKind::User, p),
                id(&f.group, &self.k("group"), IdKind::Group, p),
            )
        };
        let acl = self.acl(f, p);
        let hook_timeout = f.hook_timeout.as_ref().map(|v| {
            positive_duration(
                &Some(v.clone()),
                &self.k("hook_timeout"),
                agent.hook_timeout,
                p,
            )
        });
        let on_change = self.command(&f.on_change, "on_change", "no hook", hook_timeout, p);
        let source = source?;
        let (pfx_password, pfx_legacy) = self.pfx_options(f, &source, p);
        let verify = self.command(&f.verify, "verify", "no check", hook_timeout, p);
        Some(FileSpec {
            path: path?,
            source,
            mode: file_mode,
            owner: owner.ok()?,
            group: group.ok()?,
            dir_mode,
            acl,
            on_change,
            pfx_password,
            pfx_legacy,
            verify,
            rollback: f.rollback.as_ref().is_some_and(|v| *v.get_ref()),
        })
    }

    /// `pfx_password` (an alias of a plain secret) and `pfx_legacy`: only
    /// with `format = "pfx"`.
    fn pfx_options(
        &self,
        f: &RawFile,
        source: &FileSource,
        p: &mut Problems,
    ) -> (Option<String>, bool) {
        let is_pfx = matches!(
            source,
            FileSource::Object {
                format: OutputFormat::Pfx,
                ..
            }
        );
        if !is_pfx {
            if let Some(v) = &f.pfx_password {
                p.at(
                    v,
                    self.k("pfx_password"),
                    "pfx_password applies only with format = \"pfx\"",
                );
            }
            if let Some(v) = &f.pfx_legacy {
                p.at(
                    v,
                    self.k("pfx_legacy"),
                    "pfx_legacy applies only with format = \"pfx\"",
                );
            }
            return (None, false);
        }
        let legacy = f.pfx_legacy.as_ref().is_some_and(|v| *v.get_ref());
        let Some(v) = &f.pfx_password else {
            return (None, legacy);
        };
        let alias = v.get_ref();
        match self.secrets.get(alias) {
            Some(spec) if spec.kind == SecretKind::Secret => (Some(alias.clone()), legacy),
            Some(_) => {
                p.at(v, self.k("pfx_password"), format!("\"{alias}\" is a certificate; pfx_password names a plain secret holding the password"));
                (None, legacy)
            }
            None if self.raw.declared_aliases.iter().any(|a| a == alias) => (None, legacy),
            None => {
                p.at(v, self.k("pfx_password"), format!("\"{alias}\" is not an alias in [secrets]; pfx_password names the secret holding the PFX password"));
                (None, legacy)
            }
        }
    }

    /// Exactly one of `template`, `contents`, `secret` (+ `format`).
    fn source(&self, f: &RawFile, templates_dir: &Path, p: &mut Problems) -> Option<FileSource> {
        let given: Vec<(&str, &Spanned<String>)> = [
            ("template", &f.template),
            ("contents", &f.contents),
            ("secret", &f.secret),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        if let (Some(fmt), None) = (&f.format, &f.secret) {
            p.at(fmt, self.k("format"), "format applies only with secret = \"<alias>\" (a whole object); templates produce their own text");
        }
        match given.as_slice() {
            [] => {
                p.push(Problem::new(
                    Some(self.entry.span.clone()),
                    self.key.clone(),
                    "no content: set exactly one of template, contents, or secret (with format)",
                ));
                None
            }
            [("template", v)] => {
                let t = v.get_ref();
                if t.trim().is_empty() {
                    p.at(
                        *v,
                        self.k("template"),
                        "expected a template file name, found an empty string",
                    );
                    return None;
                }
                Some(FileSource::Template(absolutize(templates_dir, t)))
            }
            [("contents", v)] => Some(FileSource::Inline(v.get_ref().clone())),
            [("secret", v)] => self.object(v, f.format.as_ref(), p),
            [(first, _), rest @ ..] => {
                for (k, v) in rest {
                    p.at(*v, self.k(k), format!("conflicts with {first}: set exactly one of template, contents, or secret"));
                }
                None
            }
        }
    }

    fn object(
        &self,
        alias: &Spanned<String>,
        format: Option<&Spanned<String>>,
        p: &mut Problems,
    ) -> Option<FileSource> {
        let name = alias.get_ref();
        if !self.raw.declared_aliases.iter().any(|a| a == name) {
            let declared = if self.raw.declared_aliases.is_empty() {
                "none declared".to_owned()
            } else {
                format!("declared: {}", self.raw.declared_aliases.join(", "))
            };
            p.at(
                alias,
                self.k("secret"),
                format!("\"{name}\" is not an alias in [secrets] ({declared})"),
            );
            return None;
        }
        let format = match format {
            None => OutputFormat::Raw,
            Some(v) => output_format(v, &self.k("format"), p)?,
        };
        // An alias that failed its own checks was reported already.
        let spec = self.secrets.get(name)?;
        if format != OutputFormat::Raw && spec.kind != SecretKind::Certificate {
            if let Some(v) = &self.entry.file.format {
                p.at(v, self.k("format"), format!("format \"{}\" needs a certificate: declare {name} with type = \"certificate\", or use format = \"raw\"", v.get_ref()));
            }
            return None;
        }
        Some(FileSource::Object {
            alias: name.clone(),
            format,
        })
    }
}

fn output_format(v: &Spanned<String>, key: &str, p: &mut Problems) -> Option<OutputFormat> {
    let f = match v.get_ref().as_str() {
        "pfx" => OutputFormat::Pfx,
        "pem" => OutputFormat::Pem,
        "key" => OutputFormat::Key,
        "cert" => OutputFormat::Cert,
        "chain" => OutputFormat::Chain,
        "fullchain" => OutputFormat::Fullchain,
        "raw" => OutputFormat::Raw,
        _ => {
            p.at(v, key, "expected one of \"pfx\", \"pem\", \"key\", \"cert\", \"chain\", \"fullchain\", \"raw\"");
            return None;
        }
    };
    Some(f)
}

/// Parse an octal mode given as a string (`"0600"`, `"600"`, `"0o600"`).
pub fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= MAX_MODE)
}

fn mode(v: &Option<Spanned<toml::Value>>, key: &str, default: u32, p: &mut Problems) -> u32 {
    let Some(v) = v else { return default };
    match v.get_ref() {
        toml::Value::String(s) => parse_mode(s).unwrap_or_else(|| {
            p.at(v, key, format!("expected an octal mode from \"0000\" to \"7777\", e.g. \"0600\"; \"{s}\" is not one"));
            default
        }),
        toml::Value::Integer(n) => {
            let field = key.rsplit('.').next().unwrap_or(key);
            // 600 was probably meant as octal 0600; 384 (or 0o600, which
            // TOML reads as 384) as the mode whose octal form is 0600.
            let suggestion = if n.to_string().bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                format!("{n:04}")
            } else {
                format!("{n:04o}")
            };
            p.at(v, key, format!("expected an octal mode as a quoted string; found the number {n}: quote it, e.g. {field} = \"{suggestion}\""));
            default
        }
        other => {
            p.at(v, key, format!("expected an octal mode as a quoted string such as \"0600\", found {}", other.type_str()));
            default
        }
    }
}

#[derive(Clone, Copy)]
enum IdKind {
    User,
    Group,
}

/// Owner/group: a name (looked up now) or a numeric id (string or integer).
/// `Err(())` when given but invalid (already reported).
fn id(
    v: &Option<Spanned<toml::Value>>,
    key: &str,
    kind: IdKind,
    p: &mut Problems,
) -> Result<Option<u32>, ()> {
    let Some(v) = v else { return Ok(None) };
    let what = match kind {
        IdKind::User => "user",
        IdKind::Group => "group",
    };
    let numeric = |n: i64| u32::try_from(n).ok().filter(|n| *n != ID_UNCHANGED);
    let found = match v.get_ref() {
        toml::Value::Integer(n) => numeric(*n).ok_or_else(|| {
            format!(
                "expected a {what} name or a numeric id from 0 to {}",
                ID_UNCHANGED - 1
            )
        }),
        toml::Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().ok().and_then(numeric).ok_or_else(|| {
                format!(
                    "expected a {what} name or a numeric id from 0 to {}",
                    ID_UNCHANGED - 1
                )
            })
        }
        toml::Value::String(s) => lookup(s, kind),
        other => Err(format!(
            "expected a {what} name or a numeric id, found {}",
            other.type_str()
        )),
    };
    found.map(Some).map_err(|msg| p.at(v, key, msg))
}

fn lookup(name: &str, kind: IdKind) -> Result<u32, String> {
    match kind {
        IdKind::User => crate::platform::lookup_user(name),
        IdKind::Group => crate::platform::lookup_group(name),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mode;

    #[test]
    fn octal_modes() {
        for (s, m) in [
            ("0600", 0o600),
            ("600", 0o600),
            ("0o640", 0o640),
            ("7777", 0o7777),
            ("0", 0),
        ] {
            assert_eq!(parse_mode(s), Some(m), "{s}");
        }
        for s in [
            "",
            "0o",
            "8",
            "0999",
            "-600",
            "10000",
            "0x1ff",
            "rw-------",
            "06 00",
        ] {
            assert_eq!(parse_mode(s), None, "{s}");
        }
    }
}
