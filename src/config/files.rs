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
    AgentConfig, DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Decode, FanoutSpec, FileSource, FileSpec,
    OutputFormat, SecretKind, SecretSpec, SelectionSpec,
};
use crate::hooks::{Hook, HookCommand};
use crate::platform::acl::{self, AclEntry};

/// A resolved `[[file]]`: one file, or a directory of files kvsync names.
pub(super) enum Resolved {
    File(FileSpec),
    Fanout(FanoutSpec),
}

/// Highest permission bits `chmod` accepts (setuid, setgid, sticky, rwx×3).
pub const MAX_MODE: u32 = 0o7777;
/// `(uid_t)-1` / `(gid_t)-1` mean "leave unchanged" to chown(2): not an id.
const ID_UNCHANGED: u32 = u32::MAX;

/// Resolve every `[[file]]`; duplicate destinations are errors. Returns
/// the single files and the fan-out directories apart.
pub(super) fn resolve_files(
    raw: &RawConfig,
    agent: &AgentConfig,
    base_dir: &Path,
    secrets: &BTreeMap<String, SecretSpec>,
    selections: &BTreeMap<String, SelectionSpec>,
    p: &mut Problems,
) -> (Vec<FileSpec>, Vec<FanoutSpec>) {
    let mut out: Vec<(&RawFileEntry, FileSpec)> = Vec::new();
    let mut fanouts = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for entry in &raw.files {
        let cx = FileCx {
            key: format!("file[{}]", entry.index),
            entry,
            raw,
            secrets,
            selections,
        };
        let spec = match cx.resolve(agent, base_dir, p) {
            None => continue,
            Some(Resolved::Fanout(f)) => {
                if let Some(first) = seen.insert(f.dir.clone(), entry.index) {
                    let span = entry.file.path.as_ref().map(Spanned::span);
                    p.push(Problem::new(span, format!("{}.path", cx.key), format!("{} is already the destination of file[{first}]; each directory may be written by one [[file]] only", f.dir.display())));
                }
                fanouts.push(f);
                continue;
            }
            Some(Resolved::File(spec)) => spec,
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
    (out.into_iter().map(|(_, spec)| spec).collect(), fanouts)
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
    selections: &'a BTreeMap<String, SelectionSpec>,
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

    fn resolve(&self, agent: &AgentConfig, base_dir: &Path, p: &mut Problems) -> Option<Resolved> {
        let f = &self.entry.file;
        if f.selection.is_some() || f.ccs.as_ref().is_some_and(|v| *v.get_ref()) {
            return self.fanout(base_dir, p).map(Resolved::Fanout);
        }
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
        let decode = self.decode(f, &source, p);
        Some(Resolved::File(FileSpec {
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
            decode: decode.ok()?,
            follow_symlinks: f.follow_symlinks.as_ref().is_some_and(|v| *v.get_ref()),
        }))
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
        // An alias that failed its own checks was reported already.
        let spec = self.secrets.get(name);
        let format = match format {
            None if spec.is_some_and(|s| s.kind == SecretKind::Key) => OutputFormat::Pem,
            None => OutputFormat::Raw,
            Some(v) => output_format(v, &self.k("format"), p)?,
        };
        let spec = spec?;
        let problem = match (spec.kind, format) {
            (SecretKind::Secret, OutputFormat::Raw) => None,
            (SecretKind::Secret, _) => Some(format!(
                "needs a certificate or a key: declare {name} with type = \"certificate\" (or \"key\" for format = \"pem\"), or use format = \"raw\""
            )),
            (SecretKind::Key, OutputFormat::Pem) => None,
            (SecretKind::Key, _) => Some(format!(
                "{name} is a key: the only format of a key is \"pem\" (its public key)"
            )),
            (SecretKind::Certificate, OutputFormat::Cert) => None,
            (SecretKind::Certificate, _) if spec.public_only => Some(format!(
                "{name} is public_only: without its private key and chain only format = \"cert\" is available"
            )),
            (SecretKind::Certificate, _) => None,
        };
        if let Some(problem) = problem {
            match &self.entry.file.format {
                Some(v) => p.at(
                    v,
                    self.k("format"),
                    format!("format \"{}\" {problem}", v.get_ref()),
                ),
                None => p.at(
                    alias,
                    self.k("secret"),
                    format!("format \"raw\" (the default) {problem}"),
                ),
            }
            return None;
        }
        Some(FileSource::Object {
            alias: name.clone(),
            format,
        })
    }
}

impl FileCx<'_> {
    /// `decode`: only with `secret = "<alias>"` of a plain secret written
    /// whole (`format = "raw"`). `Err(())` when given but invalid.
    fn decode(
        &self,
        f: &RawFile,
        source: &FileSource,
        p: &mut Problems,
    ) -> Result<Option<Decode>, ()> {
        let Some(v) = &f.decode else { return Ok(None) };
        let decode = decode_kind(v, &self.k("decode"), p).ok_or(())?;
        let message = match source {
            FileSource::Object { format: OutputFormat::Raw, alias } => match self.secrets.get(alias) {
                Some(s) if s.kind == SecretKind::Secret => return Ok(Some(decode)),
                _ => format!("decode applies only to a plain secret written whole; \"{alias}\" is not one"),
            },
            FileSource::Object { format, alias } => {
                let kind = self.secrets.get(alias).map(|s| s.kind);
                let what = if kind == Some(SecretKind::Key) { "a key" } else { "an object" };
                format!("decode cannot be combined with format = \"{}\" of {what}: decode writes the decoded bytes of a plain secret (format = \"raw\")", format_name(*format))
            }
            FileSource::Template(_) | FileSource::Inline(_) => "decode needs secret = \"<alias>\" (the secret whose text is decoded); templates produce their own text, use the base64_decode filter there for text".to_owned(),
        };
        p.at(v, self.k("decode"), message);
        Err(())
    }

    /// A `[[file]]` with `selection = "<alias>"` or `ccs = true`: `path` is
    /// a directory of files kvsync names and records.
    fn fanout(&self, base_dir: &Path, p: &mut Problems) -> Option<FanoutSpec> {
        let f = &self.entry.file;
        let what = if f.selection.is_some() {
            "selection"
        } else {
            "ccs"
        };
        let dir = match &f.path {
            None => {
                p.push(Problem::new(
                    Some(self.entry.span.clone()),
                    self.k("path"),
                    format!("missing: {what} needs path = \"/directory\""),
                ));
                None
            }
            Some(v) if v.get_ref().trim().is_empty() => {
                p.at(
                    v,
                    self.k("path"),
                    "expected a directory path, found an empty string",
                );
                None
            }
            Some(v) => {
                let dir = absolutize(base_dir, v.get_ref());
                match std::fs::symlink_metadata(&dir) {
                    Ok(m) if !m.is_dir() => {
                        p.at(v, self.k("path"), format!("{what} writes one file per name into a directory, but {} exists and is not a directory", dir.display()));
                        None
                    }
                    _ => Some(dir),
                }
            }
        };
        for (k, v) in [("template", &f.template), ("contents", &f.contents)] {
            if let Some(v) = v {
                p.at(v, self.k(k), format!("conflicts with {what}: a {what} directory is filled by kvsync, not by a template"));
            }
        }
        for (k, v) in [("verify", &f.verify)] {
            if let Some(v) = v {
                p.at(v, self.k(k), format!("{k} is not supported with {what}"));
            }
        }
        if let Some(v) = &f.rollback {
            p.at(
                v,
                self.k("rollback"),
                format!("rollback is not supported with {what}"),
            );
        }
        let source = match &f.selection {
            Some(sel) => self.selection_source(sel, f, p),
            None => self.ccs_source(f, p),
        };
        let mode = mode(&f.mode, &self.k("mode"), DEFAULT_FILE_MODE, p);
        let dir_mode = mode_or(&f.dir_mode, &self.k("dir_mode"), DEFAULT_DIR_MODE, p);
        let owner = id(&f.owner, &self.k("owner"), IdKind::User, p);
        let group = id(&f.group, &self.k("group"), IdKind::Group, p);
        let on_change = self.command(&f.on_change, "on_change", "no hook", None, p);
        Some(FanoutSpec {
            dir: dir?,
            source: source?,
            mode,
            owner: owner.ok()?,
            group: group.ok()?,
            dir_mode,
            on_change,
        })
    }

    fn selection_source(
        &self,
        sel: &Spanned<String>,
        f: &RawFile,
        p: &mut Problems,
    ) -> Option<super::FanoutSource> {
        let name = sel.get_ref();
        for (k, v) in [("secret", &f.secret)] {
            if let Some(v) = v {
                p.at(
                    v,
                    self.k(k),
                    "conflicts with selection: set one of secret or selection",
                );
            }
        }
        if let Some(v) = &f.ccs {
            p.at(
                v,
                self.k("ccs"),
                "ccs applies to a certificate (secret = \"<alias>\"), not to a selection",
            );
        }
        for (k, v) in [
            ("pfx_password", f.pfx_password.as_ref().map(Spanned::span)),
            ("pfx_legacy", f.pfx_legacy.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = v {
                p.push(Problem::new(
                    Some(span),
                    self.k(k),
                    format!("{k} applies only with format = \"pfx\""),
                ));
            }
        }
        if let Some(v) = &f.format
            && v.get_ref() != "raw"
        {
            p.at(v, self.k("format"), "a selection writes each secret's value: only format = \"raw\" (optionally with decode)");
        }
        let decode = match &f.decode {
            None => None,
            Some(v) => Some(decode_kind(v, &self.k("decode"), p)?),
        };
        if !self.selections.contains_key(name) {
            if !self.raw.declared_selections.iter().any(|a| a == name) {
                let declared = if self.raw.declared_selections.is_empty() {
                    "none declared".to_owned()
                } else {
                    format!("declared: {}", self.raw.declared_selections.join(", "))
                };
                p.at(
                    sel,
                    self.k("selection"),
                    format!("\"{name}\" is not an alias in [selections] ({declared})"),
                );
            }
            return None;
        }
        Some(super::FanoutSource::Selection {
            alias: name.clone(),
            decode,
        })
    }

    fn ccs_source(&self, f: &RawFile, p: &mut Problems) -> Option<super::FanoutSource> {
        let ccs_span = f.ccs.as_ref().map(Spanned::span);
        if let Some(v) = &f.decode {
            p.at(
                v,
                self.k("decode"),
                "decode cannot be combined with ccs (a PFX per DNS name of a certificate)",
            );
        }
        match &f.format {
            Some(v) if v.get_ref() == "pfx" => {}
            Some(v) => p.at(v, self.k("format"), format!("ccs = true writes PFX files: it needs format = \"pfx\", not \"{}\"", v.get_ref())),
            None => p.push(Problem::new(ccs_span.clone(), self.k("ccs"), "ccs = true needs format = \"pfx\" (the IIS Centralized Certificate Store holds PFX files)")),
        }
        let Some(alias) = &f.secret else {
            p.push(Problem::new(
                ccs_span,
                self.k("ccs"),
                "ccs = true needs secret = \"<alias>\" of a type = \"certificate\" secret",
            ));
            return None;
        };
        let name = alias.get_ref();
        match self.secrets.get(name) {
            Some(s) if s.kind == SecretKind::Certificate && !s.public_only => {}
            Some(_) => {
                p.at(alias, self.k("secret"), format!("ccs = true needs a certificate with its private key; \"{name}\" is not one (type = \"certificate\", without public_only)"));
                return None;
            }
            None if self.raw.declared_aliases.iter().any(|a| a == name) => return None,
            None => {
                p.at(
                    alias,
                    self.k("secret"),
                    format!("\"{name}\" is not an alias in [secrets]"),
                );
                return None;
            }
        }
        let pfx_password = match &f.pfx_password {
            None => None,
            Some(v) => match self.secrets.get(v.get_ref()) {
                Some(s) if s.kind == SecretKind::Secret => Some(v.get_ref().clone()),
                _ => {
                    p.at(v, self.k("pfx_password"), format!("\"{}\" is not a plain secret in [secrets]; pfx_password names the secret holding the PFX password", v.get_ref()));
                    return None;
                }
            },
        };
        Some(super::FanoutSource::Ccs {
            alias: name.clone(),
            pfx_password,
            pfx_legacy: f.pfx_legacy.as_ref().is_some_and(|v| *v.get_ref()),
        })
    }
}

fn decode_kind(v: &Spanned<String>, key: &str, p: &mut Problems) -> Option<Decode> {
    match v.get_ref().as_str() {
        "base64" => Some(Decode::Base64),
        "hex" => Some(Decode::Hex),
        _ => {
            p.at(v, key, "expected \"base64\" or \"hex\"");
            None
        }
    }
}

fn format_name(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::Pfx => "pfx",
        OutputFormat::Pem => "pem",
        OutputFormat::Key => "key",
        OutputFormat::Cert => "cert",
        OutputFormat::Chain => "chain",
        OutputFormat::Fullchain => "fullchain",
        OutputFormat::Raw => "raw",
    }
}

fn mode_or(v: &Option<Spanned<toml::Value>>, key: &str, default: u32, p: &mut Problems) -> u32 {
    mode(v, key, default, p)
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
