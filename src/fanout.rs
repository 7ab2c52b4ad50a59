//! Fan-out directories: a `[[file]]` whose `path` is a directory that
//! kvsync fills with one file per name — one per secret of a selection
//! (`selection = "web"`), or one PFX per DNS name of a certificate for the
//! IIS Centralized Certificate Store (`ccs = true`).
//!
//! Each file is written through `crate::write` (atomic, mode/owner, never
//! followed symlinks), so an unchanged file is not touched. What kvsync
//! wrote is recorded in a manifest, [`MANIFEST`], a hidden file in the
//! directory itself (it travels with the directory, needs no state
//! directory, and names only files of that directory). Files that left the
//! selection (or the certificate) are removed only if the manifest lists
//! them; other files in the directory are never touched. Crash safety: the
//! manifest is first extended with the names about to be written, then the
//! files are written, then stale files removed, then the manifest is
//! narrowed to what is current — a crash at any point leaves no written
//! file unrecorded.
//!
//! Never logs file contents; errors name the directory, the file and the
//! secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret as _;

use crate::config::{Config, FanoutSource, FanoutSpec};
use crate::render::{self, Context};
use crate::secret::SecretBytes;
use crate::write::{self, Change, Target, WriteError};

/// The manifest of a fan-out directory: one line per file kvsync wrote,
/// `name` or `name<TAB>fingerprint` (CCS: the certificate's thumbprint, the
/// PFX form and the password secret's version, since a PFX is encrypted
/// with a fresh salt every time and cannot be compared by bytes).
pub const MANIFEST: &str = ".kvsync-manifest";
/// Mode of the manifest: it lists names, not values, but stays private.
const MANIFEST_MODE: u32 = 0o600;
/// Largest manifest read: 10,000 names of ≤ 200 bytes; anything larger is
/// not ours and is not trusted.
const MAX_MANIFEST_BYTES: u64 = 2 * 1024 * 1024;

/// One file a fan-out directory should hold.
pub struct PlannedFile {
    pub name: String,
    pub bytes: SecretBytes,
    /// Compared instead of the bytes when set (CCS PFX files).
    pub fingerprint: Option<String>,
}

/// The files one fan-out directory should hold this round.
pub struct Plan {
    /// Index in `Config::fanouts`.
    pub index: usize,
    pub files: Vec<PlannedFile>,
}

/// What applying a plan did to each path (`Change::Updated` for a removal).
#[derive(Debug, Default)]
pub struct Applied {
    pub written: Vec<(PathBuf, Change)>,
    pub removed: Vec<PathBuf>,
}

impl Applied {
    pub fn changed(&self) -> Vec<PathBuf> {
        self.written
            .iter()
            .filter(|(_, c)| c.is_change())
            .map(|(p, _)| p.clone())
            .chain(self.removed.iter().cloned())
            .collect()
    }
}

/// A name usable as a file in the directory (never a path, never hidden).
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255
}

/// Render every fan-out directory of `config` for this round. A directory
/// whose selection or certificate was not fetched is left out (its files
/// keep their contents); a value that cannot be decoded is an error naming
/// the directory and the secret.
pub fn plan_all(config: &Config, ctx: &Context) -> (Vec<Plan>, Vec<String>) {
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for (index, spec) in config.fanouts.iter().enumerate() {
        match plan_one(spec, ctx) {
            Ok(Some(files)) => plans.push(Plan { index, files }),
            Ok(None) => {}
            Err(e) => errors.push(format!("{}: {e}", spec.dir.display())),
        }
    }
    (plans, errors)
}

fn plan_one(spec: &FanoutSpec, ctx: &Context) -> Result<Option<Vec<PlannedFile>>, String> {
    match &spec.source {
        FanoutSource::Selection { alias, decode } => {
            let Some(list) = ctx.selected.get(alias) else {
                return Ok(None);
            };
            let mut files = Vec::with_capacity(list.len());
            for s in list.iter().filter(|s| safe_name(&s.name)) {
                let bytes = render::selected_bytes(s, *decode)
                    .map_err(|e| format!("selection `{alias}`: {e}"))?;
                files.push(PlannedFile {
                    name: s.name.clone(),
                    bytes,
                    fingerprint: None,
                });
            }
            Ok(Some(files))
        }
        FanoutSource::Ccs {
            alias,
            pfx_password,
            pfx_legacy,
        } => {
            let Some(c) = ctx.certs.get(alias) else {
                return Ok(None);
            };
            let password = match pfx_password {
                None => None,
                Some(pw) => Some(ctx.secrets.get(pw).ok_or_else(|| {
                    format!("the PFX password secret `{pw}` was not fetched this round")
                })?),
            };
            let pfx =
                crate::certs::build_pfx(c, password.map(|b| b.value.expose_secret()), *pfx_legacy)
                    .map_err(|e| format!("cannot build the PFX of `{alias}`: {e}"))?;
            let fingerprint = format!(
                "{} {} {}",
                c.thumbprint,
                if *pfx_legacy { "legacy" } else { "aes" },
                password.map_or("-", |b| b.version.as_str())
            );
            let mut names: Vec<String> = c
                .sans
                .iter()
                .filter(|s| s.parse::<std::net::IpAddr>().is_err())
                .map(|s| ccs_file_name(s))
                .filter(|n| safe_name(n))
                .collect();
            names.sort();
            names.dedup();
            Ok(Some(
                names
                    .into_iter()
                    .map(|name| PlannedFile {
                        name,
                        bytes: SecretBytes::new(pfx.clone()),
                        fingerprint: Some(fingerprint.clone()),
                    })
                    .collect(),
            ))
        }
    }
}

/// The file IIS's Centralized Certificate Store looks up for a host name:
/// `www.contoso.com.pfx`; a wildcard `*.contoso.com` is `_.contoso.com.pfx`
/// (PROTOCOL.md §7). Host names are case-insensitive: lowercase.
pub fn ccs_file_name(dns: &str) -> String {
    let dns = dns.trim().to_ascii_lowercase();
    match dns.strip_prefix("*.") {
        Some(rest) => format!("_.{rest}.pfx"),
        None => format!("{dns}.pfx"),
    }
}

fn target(spec: &FanoutSpec, path: PathBuf, mode: u32) -> Target {
    Target {
        path,
        mode,
        uid: spec.owner,
        gid: spec.group,
        dir_mode: spec.dir_mode,
        // Fan-out directories are walked strictly (no symlinked ancestor).
        follow_symlinks: false,
        // Windows: the default protected DACL (SYSTEM, Administrators).
        #[cfg(windows)]
        acl: Vec::new(),
    }
}

/// The manifest's entries: name → fingerprint ("" when none). Lines that
/// are not safe names are ignored (never acted upon).
fn read_manifest(dir: &Path) -> BTreeMap<String, String> {
    use std::io::Read as _;
    let path = dir.join(MANIFEST);
    let mut text = String::new();
    let opened = std::fs::symlink_metadata(&path)
        .ok()
        .filter(|m| m.is_file() && m.len() <= MAX_MANIFEST_BYTES)
        .and_then(|_| std::fs::File::open(&path).ok());
    if let Some(mut f) = opened
        && f.read_to_string(&mut text).is_err()
    {
        text.clear();
    }
    text.lines()
        .filter_map(|l| {
            let (name, fp) = l.split_once('\t').unwrap_or((l, ""));
            safe_name(name).then(|| (name.to_owned(), fp.to_owned()))
        })
        .collect()
}

fn manifest_bytes(entries: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = String::new();
    for (name, fp) in entries {
        out.push_str(name);
        if !fp.is_empty() {
            out.push('\t');
            out.push_str(fp);
        }
        out.push('\n');
    }
    out.into_bytes()
}

fn write_manifest(spec: &FanoutSpec, entries: &BTreeMap<String, String>) -> Result<(), WriteError> {
    let t = target(spec, spec.dir.join(MANIFEST), MANIFEST_MODE);
    write::apply(&t, &manifest_bytes(entries)).map(|_| ())
}

/// Write the files of `plan`, remove recorded files that left it, keep the
/// manifest (see the module doc for the order). With `dry_run`, report what
/// would happen and change nothing.
pub fn apply(spec: &FanoutSpec, plan: &Plan, dry_run: bool) -> Result<Applied, WriteError> {
    let recorded = read_manifest(&spec.dir);
    let wanted: BTreeMap<String, String> = plan
        .files
        .iter()
        .map(|f| (f.name.clone(), f.fingerprint.clone().unwrap_or_default()))
        .collect();
    let mut applied = Applied::default();
    if !dry_run && wanted.keys().any(|n| !recorded.contains_key(n)) {
        let mut both = recorded.clone();
        for (n, fp) in &wanted {
            both.entry(n.clone()).or_insert_with(|| fp.clone());
        }
        write_manifest(spec, &both)?;
    }
    for f in &plan.files {
        let path = spec.dir.join(&f.name);
        let t = target(spec, path.clone(), spec.mode);
        let same_fingerprint = f.fingerprint.as_ref().is_some_and(|fp| {
            recorded.get(&f.name) == Some(fp)
                && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
        });
        let change = if same_fingerprint {
            // Same certificate and PFX settings: only fix mode/owner.
            match write::plan(&t, f.bytes.expose())? {
                Change::Updated | Change::Created => Change::Unchanged,
                other => other,
            }
        } else if dry_run {
            write::plan(&t, f.bytes.expose())?
        } else {
            write::apply(&t, f.bytes.expose())?
        };
        if change.is_change() {
            tracing::info!(path = %path.display(), change = ?change, "file written");
        }
        applied.written.push((path, change));
    }
    for name in recorded.keys().filter(|n| !wanted.contains_key(*n)) {
        let path = spec.dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {}
            Err(_) => continue,
        }
        if !dry_run {
            std::fs::remove_file(&path).map_err(|source| WriteError {
                path: path.clone(),
                action: "remove a file that left the selection",
                source,
            })?;
            write::sync_parent_dir(&path)?;
        }
        tracing::info!(path = %path.display(), "file removed: it left the selection");
        applied.removed.push(path);
    }
    if !dry_run && recorded != wanted {
        write_manifest(spec, &wanted)?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ccs_names_and_safe_names() {
        assert_eq!(ccs_file_name("*.Example.com"), "_.example.com.pfx");
        assert_eq!(ccs_file_name("a.example"), "a.example.pfx");
        assert!(!safe_name(".kvsync-manifest"));
        assert!(!safe_name("../x") && !safe_name("a/b") && !safe_name(""));
        assert!(safe_name("web-db"));
    }

    #[test]
    fn manifest_round_trip_ignores_unsafe_lines() {
        let dir = tempfile::tempdir().unwrap();
        let spec = FanoutSpec {
            dir: dir.path().to_path_buf(),
            source: FanoutSource::Selection {
                alias: "x".into(),
                decode: None,
            },
            mode: 0o600,
            owner: None,
            group: None,
            dir_mode: 0o755,
            on_change: None,
        };
        let entries = BTreeMap::from([
            ("a".to_owned(), String::new()),
            ("b.pfx".to_owned(), "T aes -".to_owned()),
        ]);
        write_manifest(&spec, &entries).unwrap();
        assert_eq!(read_manifest(dir.path()), entries);
        let t = target(&spec, dir.path().join(MANIFEST), 0o600);
        write::apply(&t, b"../etc/passwd\n.hidden\nok\n").unwrap();
        assert_eq!(
            read_manifest(dir.path()).keys().collect::<Vec<_>>(),
            vec!["ok"]
        );
    }
}
