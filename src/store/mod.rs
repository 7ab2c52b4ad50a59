//! `[[store]]`: a certificate secret kept in a Windows certificate store
//! (PROTOCOL.md §7), the IIS delivery path. One step of the sync round,
//! after the files are committed and before the hooks run:
//!
//! ```text
//! new version? ── no ─► (keep ACL current) nothing changes, no hook
//!      │ yes
//!      ▼
//! import leaf + key (PFXImportCertStore, machine key set, not exportable)
//! → add to the store by thumbprint → friendly name, description marker
//! → key DACL for `accounts` → intermediates into LocalMachine\CA (never Root)
//! → CERT_RENEWAL_PROP_ID on superseded versions → rebind http.sys (opt-in)
//! → remove versions beyond `keep`, never one still bound → commit the store
//! ```
//!
//! The decisions are plain data and tested everywhere: [`plan`] (which
//! versions go), [`keysd`] (the key's security descriptor), [`bindings`]
//! (which http.sys bindings are rewritten, and to what). The Win32 calls are
//! in `platform/windows/{certstore,keyacl,httpsys}.rs`; on Unix `[[store]]`
//! is a config error, and [`crate::platform::store_sync`] refuses.
//!
//! Versions of "this certificate" are the store's certificates whose
//! description property (`CERT_DESCRIPTION_PROP_ID`) is [`marker`]`(alias)`:
//! kvsync never removes a certificate it did not put there.

pub mod bindings;
pub mod keysd;
pub mod plan;

use std::fmt;

use crate::certs::CertMaterial;
use crate::config::StoreSpec;

/// The description kvsync sets on every certificate it adds for `alias`;
/// the certificate console shows it, and `keep` counts only these.
pub fn marker(alias: &str) -> String {
    format!("kvsync:{alias}")
}

/// The friendly name of a delivered version: `friendly_name`, or
/// `kvsync <alias> <notAfter>`.
pub fn friendly_name(spec: &StoreSpec, material: &CertMaterial) -> String {
    spec.friendly_name
        .clone()
        .unwrap_or_else(|| format!("kvsync {} {}", spec.alias, material.not_after))
}

/// What a store step did (or, dry run, would do). Thumbprints are
/// uppercase SHA-1 hex; nothing here is secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// `LocalMachine\My`.
    pub store: String,
    pub alias: String,
    /// The delivered version's thumbprint.
    pub thumbprint: String,
    /// A new version was added (its hook runs).
    pub added: bool,
    /// Intermediates added to `LocalMachine\CA`.
    pub intermediates: Vec<String>,
    /// Superseded versions that now carry the renewal link.
    pub linked: Vec<String>,
    /// http.sys bindings rewritten (`ipport=… OLD -> NEW (appid …)`).
    pub rebound: Vec<String>,
    /// Versions removed beyond `keep`.
    pub removed: Vec<String>,
    /// Versions beyond `keep` left because http.sys still binds them.
    pub kept_bound: Vec<String>,
}

impl StoreReport {
    /// Whether anything in a store or in http.sys changed.
    pub fn changed(&self) -> bool {
        self.added
            || !self.intermediates.is_empty()
            || !self.linked.is_empty()
            || !self.rebound.is_empty()
            || !self.removed.is_empty()
    }

    /// `--dry-run` lines: the thumbprints that would be added and removed.
    pub fn plan_lines(&self) -> Vec<String> {
        let s = &self.store;
        let mut out = Vec::new();
        if self.added {
            out.push(format!(
                "would add to {s}: {} ({})",
                self.thumbprint, self.alias
            ));
        } else {
            out.push(format!(
                "unchanged in {s}: {} ({})",
                self.thumbprint, self.alias
            ));
        }
        out.extend(
            self.intermediates
                .iter()
                .map(|t| format!("would add to LocalMachine\\CA: {t}")),
        );
        out.extend(
            self.removed
                .iter()
                .map(|t| format!("would remove from {s}: {t}")),
        );
        out.extend(
            self.kept_bound
                .iter()
                .map(|t| format!("would keep in {s} (bound in http.sys): {t}")),
        );
        out
    }
}

/// A store step that failed; the message names the store, the certificate
/// and the Win32 call, never key material.
#[derive(Debug, thiserror::Error)]
#[error("store {store}, certificate '{alias}': {message}")]
pub struct StoreError {
    pub store: String,
    pub alias: String,
    pub message: String,
}

impl fmt::Display for StoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.store, self.alias, self.thumbprint)
    }
}

/// Bring `spec`'s store in step with `material` (see the module docs);
/// `dry_run` only reads the store and http.sys.
pub fn sync(
    spec: &StoreSpec,
    material: &CertMaterial,
    dry_run: bool,
) -> Result<StoreReport, StoreError> {
    crate::platform::store_sync(spec, material, dry_run).map_err(|message| StoreError {
        store: spec.label(),
        alias: spec.alias.clone(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_lines_name_thumbprints_only() {
        let r = StoreReport {
            store: "LocalMachine\\My".into(),
            alias: "site".into(),
            thumbprint: "BB".into(),
            added: true,
            intermediates: vec!["II".into()],
            removed: vec!["AA".into()],
            kept_bound: vec!["00".into()],
            ..StoreReport::default()
        };
        assert!(r.changed());
        assert_eq!(
            r.plan_lines(),
            [
                "would add to LocalMachine\\My: BB (site)",
                "would add to LocalMachine\\CA: II",
                "would remove from LocalMachine\\My: AA",
                "would keep in LocalMachine\\My (bound in http.sys): 00",
            ]
        );
        let same = StoreReport {
            store: "s".into(),
            alias: "a".into(),
            thumbprint: "T".into(),
            ..StoreReport::default()
        };
        assert!(!same.changed());
        assert_eq!(same.plan_lines(), ["unchanged in s: T (a)"]);
        assert_eq!(marker("site"), "kvsync:site");
    }
}
