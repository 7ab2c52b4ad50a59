//! Config strictness when running as root: the config file, every template
//! file it names and the templates directory must be owned by root and not
//! writable by group or others. Whoever can edit them can add an
//! `on_change` command, which kvsync runs as root (and the agent reloads an
//! edited config by itself).
//!
//! Exempt: files on a read-only filesystem (a Kubernetes ConfigMap or
//! Secret volume: nobody can write them, whatever their mode bits say), and
//! every file when `KVSYNC_TRUST_CONFIG_PERMISSIONS=1` is set in kvsync's
//! environment (documented in docs/CONFIG.md for containers whose config
//! comes from a source kvsync cannot check). The opt-out is an environment
//! variable on purpose: a config file cannot vouch for itself.

use std::path::{Path, PathBuf};

use super::{Config, Diagnostic, FileSource};

/// The opt-out (value `1`).
pub const TRUST_ENV: &str = "KVSYNC_TRUST_CONFIG_PERMISSIONS";

/// Whether the checks apply to this process (root, and no opt-out).
pub fn required() -> bool {
    #[cfg(unix)]
    {
        nix::unistd::geteuid().is_root() && std::env::var_os(TRUST_ENV).is_none_or(|v| v != "1")
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Problems of `meta` (the inode behind `path`), as a diagnostic.
#[cfg(unix)]
pub fn check_meta(path: &Path, meta: &std::fs::Metadata, what: &str) -> Option<Diagnostic> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    let foreign_owner = meta.uid() != 0;
    let writable = mode & 0o022 != 0;
    if (!foreign_owner && !writable) || read_only_fs(path) {
        return None;
    }
    let d = path.display();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if foreign_owner {
        problems.push(format!("owned by uid {}", meta.uid()));
        fixes.push(format!("chown root:root {d}"));
    }
    if writable {
        let by = match mode & 0o022 {
            0o020 => "group",
            0o002 => "others",
            _ => "group and others",
        };
        problems.push(format!("writable by {by} (mode {mode:04o})"));
        fixes.push(format!("chmod go-w {d}"));
    }
    Some(Diagnostic {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: "-".to_owned(),
        message: format!(
            "kvsync runs as root and this {what} is {}: whoever can edit it can run commands as root through on_change; fix: `{}` (or set {TRUST_ENV}=1 if the file comes from a source kvsync cannot check, see docs/CONFIG.md)",
            problems.join(" and "),
            fixes.join(" && ")
        ),
    })
}

#[cfg(not(unix))]
pub fn check_meta(_: &Path, _: &std::fs::Metadata, _: &str) -> Option<Diagnostic> {
    None
}

#[cfg(unix)]
fn read_only_fs(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Check the templates directory and every template file of `config`.
pub fn check_templates(config: &Config) -> Vec<Diagnostic> {
    let mut paths: Vec<(PathBuf, &str)> =
        vec![(config.agent.templates_dir.clone(), "templates directory")];
    for f in &config.files {
        if let FileSource::Template(p) = &f.source {
            paths.push((p.clone(), "template"));
        }
    }
    paths.dedup();
    paths
        .iter()
        .filter_map(|(p, what)| {
            let meta = std::fs::metadata(p).ok()?;
            check_meta(p, &meta, what)
        })
        .collect()
}
