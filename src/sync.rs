//! The sync [`Engine`] and its [`round`]: fetch every declared secret
//! (instance metadata first when used, change detection in [`changes`]) →
//! normalise certificates → render every file → stage the changed ones
//! (`sync/stage.rs`) → run their `verify` commands → commit → run each
//! distinct `on_change` hook once, in config order. [`Engine::round`] is the
//! one round of `kvsync once` (all or nothing), `kvsync run` (per hook
//! group) and `kvsync check --online` (fetch only); see [`round`].
//!
//! Invariants (SPEC.md "Writing files"):
//! * every file is rendered before any is written; in an all-or-nothing
//!   round, a single fetch, certificate, render or verify failure means
//!   nothing is written;
//! * hooks run only after all changed files of the round are in place, each
//!   distinct command once, with `KVSYNC_CHANGED` listing its changed files;
//!   a failed hook restores the `rollback = true` files of its group;
//! * nothing here prints a secret value: outcomes name paths and changes only.

pub mod changes;
pub mod failure;
pub mod retry;
pub mod round;
mod select;
mod stage;

pub use failure::{FailureKind, SyncError};
pub use round::{Outcome, Policy, RoundOptions, RoundState};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use crate::certs;
use crate::config::{Config, SecretKind, SecretSpec, VaultRef};
use crate::identity::IdentityError;
use crate::render::{self, Renderer};
use crate::vault::{SecretBundle, VaultClient, VaultError};
use crate::write::Target;
use url::Url;

/// Seconds per day (for "days left" in expiry warnings and `check --online`).
pub const SECS_PER_DAY: i64 = 24 * 3600;

pub use crate::time::unix_now;

/// The pipeline for one loaded config: what a round needs besides the
/// state its caller keeps across rounds ([`RoundState`]).
pub struct Engine {
    config: Config,
    renderer: Renderer,
    vault: Arc<VaultClient>,
}

impl Engine {
    pub fn new(config: Config, renderer: Renderer, vault: Arc<VaultClient>) -> Self {
        Self {
            config,
            renderer,
            vault,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn vault(&self) -> &Arc<VaultClient> {
        &self.vault
    }

    /// Instance metadata (when used) and every secret's resolved vault URL;
    /// failures are reported per alias (or as instance metadata).
    async fn resolve_vaults(&self) -> (Option<serde_json::Value>, Vec<Job<'_>>, Vec<SyncError>) {
        let mut errors = Vec::new();
        let instance = match self.fetch_instance().await {
            Ok(v) => v,
            Err(e) => {
                errors.push(SyncError::Instance(e));
                None
            }
        };
        let audience = self.config.auth.audience.as_deref();
        let mut jobs = Vec::new();
        for spec in self
            .config
            .secrets
            .values()
            .filter(|s| select::reads_secret(s))
        {
            match spec.vault.resolve(instance.as_ref(), audience) {
                Ok(url) => jobs.push((spec, url)),
                Err(_) if instance.is_none() && !errors.is_empty() => {}
                Err(error) => errors.push(SyncError::VaultUrl {
                    alias: spec.alias.clone(),
                    error,
                }),
            }
        }
        (instance, jobs, errors)
    }

    /// GET every job, at most `[agent] concurrency` at once.
    async fn get_many<'a>(
        &self,
        jobs: Vec<Job<'a>>,
    ) -> Vec<(Job<'a>, Result<SecretBundle, VaultError>)> {
        let concurrency = self.config.agent.concurrency.max(1);
        futures::stream::iter(jobs)
            .map(|(spec, url)| async move {
                let got = self
                    .vault
                    .get_secret(&url, &spec.name, spec.version.as_deref())
                    .await;
                ((spec, url), got)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    /// Whether this config needs instance metadata: a template refers to
    /// `instance`, or a vault URL is a template.
    pub fn uses_instance(&self) -> bool {
        self.renderer.uses_instance()
            || self
                .config
                .vault
                .as_ref()
                .is_some_and(VaultRef::is_template)
            || self.config.secrets.values().any(|s| s.vault.is_template())
            || self
                .config
                .selections
                .values()
                .any(|s| s.vault.is_template())
    }

    /// The instance metadata `compute` object, fetched (at most once per
    /// round) only when [`Engine::uses_instance`].
    pub async fn fetch_instance(&self) -> Result<Option<serde_json::Value>, IdentityError> {
        if !self.uses_instance() {
            return Ok(None);
        }
        let source = self.vault.tokens().source().clone();
        match source.instance_metadata().await? {
            Some(v) => Ok(Some(v)),
            None => Err(IdentityError::Other(format!(
                "instance metadata is not available from the {} identity source; templates and vault URLs using `instance` need Azure Arc or Azure IMDS",
                source.info().kind
            ))),
        }
    }

    /// Normalise the secrets of `type = "certificate"` entries into
    /// `ctx.certs`; returns one error per certificate that failed.
    pub fn add_certificates(&self, ctx: &mut render::Context) -> Vec<SyncError> {
        let mut errors = Vec::new();
        for spec in self.config.secrets.values() {
            if spec.kind != SecretKind::Certificate || spec.public_only {
                continue;
            }
            let Some(bundle) = ctx.secrets.get(&spec.alias) else {
                continue;
            };
            // The leaf is the certificate the secret's key belongs to: only
            // the secret is read (Key Vault Secrets User suffices).
            match certs::from_secret(
                &bundle.value,
                bundle.content_type.as_deref(),
                None,
                spec.include_root,
            ) {
                Ok(material) => {
                    ctx.certs.insert(spec.alias.clone(), material);
                }
                Err(error) => errors.push(SyncError::Certificate {
                    alias: spec.alias.clone(),
                    name: spec.name.clone(),
                    version: bundle.version.clone(),
                    error,
                }),
            }
        }
        errors
    }

    /// Log a warning (once per certificate version, remembered in `warned`) for
    /// every delivered certificate that expires within
    /// `[agent] cert_expiry_warning` (or has expired); returns every
    /// certificate as (alias, notAfter as Unix seconds).
    pub fn warn_expiring(
        &self,
        ctx: &render::Context,
        warned: &Mutex<BTreeSet<String>>,
    ) -> Vec<(String, i64)> {
        let window =
            i64::try_from(self.config.agent.cert_expiry_warning.as_secs()).unwrap_or(i64::MAX);
        let now = unix_now();
        let mut out = Vec::new();
        for (alias, c) in &ctx.certs {
            let left = c.not_after_unix.saturating_sub(now);
            // Marked as warned only once inside the window: a certificate
            // first seen with plenty of time left still warns when it gets
            // close (the agent keeps the same version for months).
            let first_time = || {
                warned
                    .lock()
                    .map(|mut warned| warned.insert(c.thumbprint.clone()))
                    .unwrap_or(true)
            };
            if left <= window && first_time() {
                let days = left.div_euclid(SECS_PER_DAY);
                tracing::warn!(
                    alias = %alias,
                    subject = %c.subject,
                    thumbprint = %c.thumbprint,
                    not_after = %c.not_after,
                    days_left = days,
                    "certificate expires soon: renew it in Key Vault"
                );
            }
            out.push((alias.clone(), c.not_after_unix));
        }
        out
    }

    /// Where and how file number `index` is written.
    /// Optional secrets that are missing (404) or disabled: their `default`
    /// takes the failure's place and `meta.<alias>.present` is false. Any
    /// other failure (403, 5xx, timeout) stays a failure.
    pub(crate) fn fill_optional(&self, ctx: &mut render::Context, errors: &mut Vec<SyncError>) {
        errors.retain(|e| {
            let SyncError::Fetch { alias, error } = e else {
                return true;
            };
            let Some(spec) = self.config.secrets.get(alias).filter(|s| s.optional) else {
                return true;
            };
            if !matches!(
                error,
                VaultError::NotFound { .. } | VaultError::Disabled { .. }
            ) {
                return true;
            }
            tracing::info!(alias = %alias, secret = %spec.name, reason = %error, "optional secret is absent; rendering its default");
            ctx.secrets.insert(alias.clone(), absent_bundle(spec));
            ctx.absent.insert(alias.clone());
            false
        });
    }

    pub fn target(&self, index: usize) -> Target {
        Target::from_spec(&self.config.files[index])
    }
}

/// A secret to GET and the vault URL it resolved to this round.
type Job<'a> = (&'a SecretSpec, Url);

/// The stand-in for an absent optional secret: its default as the value,
/// its name, no version.
fn absent_bundle(spec: &SecretSpec) -> SecretBundle {
    SecretBundle {
        value: secrecy::SecretString::from(spec.default.clone()),
        name: spec.name.clone(),
        version: String::new(),
        id: String::new(),
        content_type: None,
        tags: std::collections::BTreeMap::new(),
        enabled: false,
        created: None,
        updated: None,
        not_before: None,
        expires: None,
        kid: None,
        managed: false,
    }
}
