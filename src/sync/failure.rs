//! What can go wrong in a round, typed: every failure is a [`SyncError`]
//! whose [`FailureKind`] is also the `kind` label of the agent's
//! `kvsync_failures_total` metric (every label is registered up front).
//! Messages name aliases, paths and commands, never a value.

use std::path::PathBuf;
use std::time::Duration;

use crate::certs::CertError;
use crate::hooks::HookError;
use crate::identity::IdentityError;
use crate::render::RenderError;
use crate::store::StoreError;
use crate::vault::{VaultError, VaultUrlError};
use crate::write::WriteError;

/// The stage a failure belongs to; `as_str` is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The config (at reload), or a vault URL that a round could not resolve.
    Config,
    /// No token (identity source, Entra ID) or no instance metadata.
    Identity,
    /// A Key Vault request.
    Vault,
    /// A certificate secret that could not be normalised.
    Certificate,
    Render,
    /// A file's `verify` command rejected its candidate.
    Verify,
    Write,
    Hook,
    /// The round did not reach its first write within `[agent] deadline`.
    Deadline,
}

impl FailureKind {
    /// Every kind, in metric order.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Config,
        FailureKind::Identity,
        FailureKind::Vault,
        FailureKind::Certificate,
        FailureKind::Render,
        FailureKind::Verify,
        FailureKind::Write,
        FailureKind::Hook,
        FailureKind::Deadline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Config => "config",
            FailureKind::Identity => "identity",
            FailureKind::Vault => "vault",
            FailureKind::Certificate => "certificate",
            FailureKind::Render => "render",
            FailureKind::Verify => "verify",
            FailureKind::Write => "write",
            FailureKind::Hook => "hook",
            FailureKind::Deadline => "deadline",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failure of a round.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A secret's GET (or the vault's list) failed.
    #[error("secret '{alias}': {error}")]
    Fetch { alias: String, error: VaultError },
    /// A `[selections]` entry: its vault's list, or a selected secret's GET.
    #[error("selection '{alias}': {error}")]
    Selection { alias: String, error: VaultError },
    /// A fan-out directory (`selection`, `ccs`) could not be rendered.
    #[error("{0}")]
    Fanout(String),
    /// Instance metadata was needed (a template or a vault URL uses it) and
    /// could not be had.
    #[error("instance metadata: {0}")]
    Instance(IdentityError),
    /// A secret's vault URL template did not resolve to a valid vault URL.
    #[error("secret '{alias}': cannot resolve the vault URL: {error}")]
    VaultUrl { alias: String, error: VaultUrlError },
    #[error("certificate '{alias}': Key Vault certificate '{name}' (version {version}): {error}")]
    Certificate {
        alias: String,
        name: String,
        version: String,
        error: CertError,
    },
    #[error("{0}")]
    Render(RenderError),
    /// A file's `verify` command rejected its candidate; nothing replaced.
    #[error(
        "{}: verify rejected the new contents; the live file is unchanged: {error}",
        path.display()
    )]
    Verify { path: PathBuf, error: HookError },
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("{0}")]
    Hook(HookError),
    /// A `[[store]]` step (Windows certificate store, http.sys).
    #[error("{0}")]
    Store(StoreError),
    #[error("sync did not finish within the deadline of {}", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// A failure that kept the other members of a hook group from being
    /// written too (per-group rounds).
    #[error("{error} (its hook group of {members} files left untouched)")]
    Group {
        members: usize,
        error: Box<SyncError>,
    },
}

impl SyncError {
    pub fn kind(&self) -> FailureKind {
        match self {
            SyncError::Fetch {
                error: VaultError::Identity(_),
                ..
            }
            | SyncError::Selection {
                error: VaultError::Identity(_),
                ..
            }
            | SyncError::Instance(_) => FailureKind::Identity,
            SyncError::Selection { .. } => FailureKind::Vault,
            SyncError::Fanout(_) => FailureKind::Render,
            SyncError::Fetch { .. } => FailureKind::Vault,
            SyncError::VaultUrl { .. } => FailureKind::Config,
            SyncError::Certificate { .. } => FailureKind::Certificate,
            SyncError::Render(_) => FailureKind::Render,
            SyncError::Verify { .. } => FailureKind::Verify,
            SyncError::Write(_) | SyncError::Store(_) => FailureKind::Write,
            SyncError::Hook(_) => FailureKind::Hook,
            SyncError::Deadline(_) => FailureKind::Deadline,
            SyncError::Group { error, .. } => error.kind(),
        }
    }

    /// Whether a later retry may succeed without operator action (an
    /// outage, or a hook that may work next time).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Fetch { error, .. } | SyncError::Selection { error, .. } => {
                error.is_transient()
            }
            SyncError::Fanout(_) => false,
            SyncError::Instance(e) => e.is_transient(),
            SyncError::Certificate { error, .. } => error.is_transient(),
            SyncError::Deadline(_) | SyncError::Hook(_) => true,
            SyncError::Group { error, .. } => error.is_transient(),
            SyncError::VaultUrl { .. }
            | SyncError::Render(_)
            | SyncError::Verify { .. }
            | SyncError::Write(_)
            | SyncError::Store(_) => false,
        }
    }

    /// The failure, noting the other members of its hook group when there
    /// are any.
    pub(crate) fn in_group(self, members: usize) -> SyncError {
        if members > 1 {
            SyncError::Group {
                members,
                error: Box::new(self),
            }
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vault_url_that_does_not_resolve_is_a_config_failure_not_identity() {
        let e = SyncError::VaultUrl {
            alias: "db".into(),
            error: VaultUrlError::NotDnsFragment("instance.tags.kv".into()),
        };
        assert_eq!(e.kind(), FailureKind::Config);
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "secret 'db': cannot resolve the vault URL: `{{ instance.tags.kv }}` is not a DNS name fragment (letters, digits, `-`, `.`)"
        );
    }

    #[test]
    fn every_kind_has_its_own_label() {
        let labels: std::collections::BTreeSet<&str> =
            FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), FailureKind::ALL.len());
    }
}
