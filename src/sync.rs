//! The sync [`Engine`]: fetch every declared secret (instance metadata
//! first when used) → normalise certificates → render every file → stage
//! the changed ones (`sync/stage.rs`) → run their `verify` commands → commit →
//! run each distinct `on_change` hook once. [`Engine::once`] is the
//! one-shot round; the agent's rounds (`agent::round`) use the same steps
//! per hook group, with [`changes`] deciding which secrets to GET.
//!
//! Invariants (SPEC.md "Writing files"):
//! * every file is rendered before any is written; in a one-shot round, a
//!   single fetch, certificate, render or verify failure means nothing is
//!   written;
//! * hooks run only after all changed files of the round are in place, each
//!   distinct command once, with `KVSYNC_CHANGED` listing its changed files;
//!   a failed hook restores the `rollback = true` files of its group;
//! * nothing here prints a secret value: outcomes name paths and changes only.

pub mod changes;
mod stage;

pub use stage::STAGE_THREADS;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::certs;
use crate::config::{Config, SecretKind, SecretSpec, VaultRef};
use crate::hooks::{self, HookError};
use crate::identity::IdentityError;
use crate::render::{self, RenderError, Renderer};
use crate::secret::SecretBytes;
use crate::vault::{SecretBundle, VaultClient, VaultError};
use crate::write::{self, Change, Target, WriteError};
use url::Url;

/// Seconds per day (for "days left" in expiry warnings and `check --online`).
pub const SECS_PER_DAY: i64 = 24 * 3600;

/// Seconds since the Unix epoch (0 before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What happened (or, in a dry run, would happen) to one file.
#[derive(Clone, Debug)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub change: Change,
}

/// Result of a successful round.
#[derive(Clone, Debug, Default)]
pub struct RoundReport {
    pub files: Vec<FileOutcome>,
    /// Hook commands that ran (in config order).
    pub hooks_run: Vec<String>,
}

impl RoundReport {
    pub fn changed(&self) -> impl Iterator<Item = &FileOutcome> {
        self.files.iter().filter(|f| f.change.is_change())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{}", join_fetch_errors(.0))]
    Fetch(Vec<(String, VaultError)>),
    #[error("{}", join_lines(.0))]
    Render(Vec<RenderError>),
    #[error("certificate '{alias}': {message}")]
    Certificate { alias: String, message: String },
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("{}", join_lines(.0))]
    Hooks(Vec<HookError>),
    /// A file's `verify` command rejected its candidate; nothing replaced.
    #[error("{}", join_lines(.0))]
    Verify(Vec<String>),
    #[error("sync did not finish within the deadline of {}", humantime::format_duration(*.0))]
    Deadline(Duration),
}

impl SyncError {
    /// Whether a later retry may succeed without operator action.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Fetch(errors) => errors.iter().all(|(_, e)| e.is_transient()),
            SyncError::Deadline(_) => true,
            _ => false,
        }
    }
}

fn join_lines<E: std::fmt::Display>(errors: &[E]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn join_fetch_errors(errors: &[(String, VaultError)]) -> String {
    errors
        .iter()
        .map(|(alias, e)| format!("secret '{alias}': {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The name instance-metadata failures are reported under.
pub const INSTANCE_ALIAS: &str = "instance metadata";

/// Options of one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundOptions {
    /// Fetch and render, write nothing, run no hook.
    pub dry_run: bool,
}

/// The pipeline for one loaded config.
pub struct Engine {
    config: Config,
    renderer: Renderer,
    vault: Arc<VaultClient>,
    /// Last good bundles for the agent's change detection.
    changes: changes::ChangeCache,
    /// Thumbprints already warned about (expiry): the agent warns once per
    /// certificate version, not every round; the metric stays current.
    expiry_warned: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Engine {
    pub fn new(config: Config, renderer: Renderer, vault: Arc<VaultClient>) -> Self {
        Self {
            config,
            renderer,
            vault,
            changes: changes::ChangeCache::default(),
            expiry_warned: std::sync::Mutex::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn vault(&self) -> &Arc<VaultClient> {
        &self.vault
    }

    /// Fetch every declared secret, at most `[agent] concurrency` at once.
    /// All failures are collected (one message per secret).
    pub async fn fetch_all(&self) -> Result<render::Context, SyncError> {
        let (ctx, errors) = self.fetch_each().await;
        if !errors.is_empty() {
            return Err(SyncError::Fetch(errors));
        }
        Ok(ctx)
    }

    /// Fetch every declared secret; the context holds those that succeeded
    /// (and the certificates that could be normalised), the list the
    /// failures, sorted by alias. Instance metadata is fetched first, once,
    /// when a template or a vault URL uses it (a failure is reported as
    /// `instance metadata`; secrets whose vault needs it are then skipped).
    pub async fn fetch_each(&self) -> (render::Context, Vec<(String, VaultError)>) {
        let (instance, jobs, mut errors) = self.resolve_vaults().await;
        let mut ctx = render::Context {
            instance,
            ..render::Context::default()
        };
        for ((spec, _), result) in self.get_many(jobs).await {
            match result {
                Ok(bundle) => {
                    ctx.secrets.insert(spec.alias.clone(), bundle);
                }
                Err(e) => errors.push((spec.alias.clone(), e)),
            }
        }
        errors.sort_by(|a, b| a.0.cmp(&b.0));
        (ctx, errors)
    }

    /// Instance metadata (when used) and every secret's resolved vault URL;
    /// failures are reported per alias (or as [`INSTANCE_ALIAS`]).
    async fn resolve_vaults(&self) -> (Option<serde_json::Value>, Vec<Job<'_>>, FetchErrors) {
        let mut errors = Vec::new();
        let instance = match self.fetch_instance().await {
            Ok(v) => v,
            Err(e) => {
                errors.push((INSTANCE_ALIAS.to_owned(), VaultError::Identity(e)));
                None
            }
        };
        let audience = self.config.auth.audience.as_deref();
        let mut jobs = Vec::new();
        for spec in self.config.secrets.values() {
            match spec.vault.resolve(instance.as_ref(), audience) {
                Ok(url) => jobs.push((spec, url)),
                Err(_) if instance.is_none() && !errors.is_empty() => {}
                Err(e) => errors.push((
                    spec.alias.clone(),
                    VaultError::Identity(IdentityError::Other(format!(
                        "cannot resolve the vault URL: {e}"
                    ))),
                )),
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
            if spec.kind != SecretKind::Certificate {
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
                Err(e) => errors.push(SyncError::Certificate {
                    alias: spec.alias.clone(),
                    message: format!(
                        "Key Vault certificate '{}' (version {}): {e}",
                        spec.name, bundle.version
                    ),
                }),
            }
        }
        errors
    }

    /// Log a warning (once per certificate version for this engine) for
    /// every delivered certificate that expires within
    /// `[agent] cert_expiry_warning` (or has expired); returns every
    /// certificate as (alias, notAfter as Unix seconds).
    pub fn warn_expiring(&self, ctx: &render::Context) -> Vec<(String, i64)> {
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
                self.expiry_warned
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

    /// The template context of a round, built once ([`Renderer::prepare`]).
    pub fn prepare(&self, ctx: &render::Context) -> render::Prepared {
        self.renderer.prepare(ctx)
    }

    /// Render file number `index` with a context from [`Engine::prepare`].
    pub fn render_prepared(
        &self,
        index: usize,
        ctx: &render::Context,
        prepared: &render::Prepared,
    ) -> Result<SecretBytes, RenderError> {
        self.renderer.render_prepared(index, ctx, prepared)
    }

    /// Render every file; all failures are collected.
    pub fn render_all(&self, ctx: &render::Context) -> Result<Vec<SecretBytes>, SyncError> {
        let mut out = Vec::with_capacity(self.config.files.len());
        let mut errors = Vec::new();
        let prepared = self.renderer.prepare(ctx);
        for index in 0..self.config.files.len() {
            match self.renderer.render_prepared(index, ctx, &prepared) {
                Ok(bytes) => out.push(bytes),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(SyncError::Render(errors))
        }
    }

    /// One all-or-nothing round (`kvsync once`): fetch and render under the
    /// configured deadline, then write every changed file, then run hooks.
    pub async fn once(&self, options: RoundOptions) -> Result<RoundReport, SyncError> {
        let deadline = self.config.agent.deadline;
        let rendered = tokio::time::timeout(deadline, async {
            let mut ctx = self.fetch_all().await?;
            let cert_errors = self.add_certificates(&mut ctx);
            if let Some(first) = cert_errors.into_iter().next() {
                return Err(first);
            }
            self.warn_expiring(&ctx);
            self.render_all(&ctx)
        })
        .await
        .map_err(|_| SyncError::Deadline(deadline))??;
        if options.dry_run {
            return self.plan(&rendered);
        }
        let staged = self.stage_all(&rendered)?;
        self.verify_all(&staged).await?;
        let (files, mut backups) = self.commit_all(staged)?;
        let hooks_run = self.run_hooks(&files, &mut backups).await?;
        Ok(RoundReport { files, hooks_run })
    }

    /// Run the `verify` command of every changed file against its candidate
    /// (all of them, so every rejection is reported); any failure leaves
    /// every live file as it is.
    async fn verify_all(&self, staged: &[StagedFile]) -> Result<(), SyncError> {
        let mut errors = Vec::new();
        for (index, path, candidate) in staged {
            let (Some(command), Some(candidate)) = (&self.config.files[*index].verify, candidate)
            else {
                continue;
            };
            if let Err(e) =
                verify_one(command, candidate, path, self.config.agent.hook_timeout).await
            {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SyncError::Verify(errors))
        }
    }

    /// Where and how file number `index` is written.
    pub fn target(&self, index: usize) -> Target {
        let spec = &self.config.files[index];
        Target {
            path: spec.path.clone(),
            mode: spec.mode,
            uid: spec.owner,
            gid: spec.group,
            dir_mode: spec.dir_mode,
            follow_symlinks: spec.follow_symlinks,
        }
    }

    /// What a write would do, for `--dry-run`.
    fn plan(&self, rendered: &[SecretBytes]) -> Result<RoundReport, SyncError> {
        let mut files = Vec::with_capacity(rendered.len());
        for (index, bytes) in rendered.iter().enumerate() {
            let target = self.target(index);
            let change = write::plan(&target, bytes.expose())?;
            files.push(FileOutcome {
                path: target.path,
                change,
            });
        }
        Ok(RoundReport {
            files,
            hooks_run: Vec::new(),
        })
    }

    /// Commit every staged file, then fsync each directory once (not once
    /// per file); files of a `rollback = true` group keep a backup of what
    /// they replaced.
    fn commit_all(
        &self,
        staged: Vec<StagedFile>,
    ) -> Result<(Vec<FileOutcome>, Backups), SyncError> {
        let mut files = Vec::with_capacity(staged.len());
        let mut backups = Backups::new();
        let mut unsynced: Vec<PathBuf> = Vec::new();
        for (index, path, candidate) in staged {
            let change = match candidate {
                Some(candidate) if self.config.files[index].rollback => {
                    commit_with_backup(candidate, self.config.files[index].dir_mode, &mut backups)?
                }
                Some(candidate) => match candidate.commit_without_dir_sync() {
                    Ok(change) => {
                        if !unsynced.iter().any(|p| p.parent() == path.parent()) {
                            unsynced.push(path.clone());
                        }
                        change
                    }
                    Err(e) => {
                        stage::sync_dirs(&unsynced)?;
                        return Err(e.into());
                    }
                },
                None => Change::Unchanged,
            };
            match change {
                Change::Unchanged => tracing::debug!(path = %path.display(), "unchanged"),
                other => tracing::info!(path = %path.display(), change = ?other, "file written"),
            }
            files.push(FileOutcome { path, change });
        }
        stage::sync_dirs(&unsynced)?;
        Ok((files, backups))
    }

    /// Run each distinct `on_change` command once, in config order, with the
    /// files of this round that changed and name it.
    async fn run_hooks(
        &self,
        files: &[FileOutcome],
        backups: &mut Backups,
    ) -> Result<Vec<String>, SyncError> {
        let groups = hook_groups(&self.config, files);
        let mut ran = Vec::new();
        let mut errors = Vec::new();
        for (command, changed) in groups {
            tracing::info!(hook = %command, files = changed.len(), "running on_change hook");
            match hooks::run(&command, &changed, self.config.agent.hook_timeout).await {
                Ok(()) => ran.push(command),
                Err(e) => {
                    tracing::error!(error = %e, "on_change hook failed");
                    errors.push(e);
                    roll_back(&command, &changed, backups);
                }
            }
        }
        if errors.is_empty() {
            Ok(ran)
        } else {
            Err(SyncError::Hooks(errors))
        }
    }
}

/// A secret to GET and the vault URL it resolved to this round.
type Job<'a> = (&'a SecretSpec, Url);
/// Failures of a fetch, by alias.
type FetchErrors = Vec<(String, VaultError)>;

/// A staged file: its index in the config, its destination, and the
/// candidate (`None` when unchanged).
type StagedFile = (usize, PathBuf, Option<write::Staged>);

/// What `rollback = true` files replaced this round: destination →
/// (backup, dir_mode).
pub type Backups = BTreeMap<PathBuf, (write::Backup, u32)>;

/// Commit `candidate` of a `rollback = true` file, keeping what it replaced
/// in `backups` (restored with `dir_mode` if its hook fails).
pub fn commit_with_backup(
    candidate: write::Staged,
    dir_mode: u32,
    backups: &mut Backups,
) -> Result<Change, WriteError> {
    let (change, backup) = candidate.commit_with_backup()?;
    backups.insert(backup.path.clone(), (backup, dir_mode));
    Ok(change)
}

/// Runs one file's `verify`; the error names the file and the command.
pub async fn verify_one(
    command: &str,
    candidate: &write::Staged,
    destination: &std::path::Path,
    timeout: Duration,
) -> Result<(), String> {
    tracing::info!(path = %destination.display(), verify = %command, "verifying candidate");
    hooks::verify(command, candidate.candidate_path(), destination, timeout)
        .await
        .map_err(|e| {
            tracing::error!(path = %destination.display(), error = %e, "verify rejected the new file; the live file is kept");
            format!(
                "{}: verify rejected the new contents; the live file is unchanged: {e}",
                destination.display()
            )
        })
}

/// After hook `command` failed: put back the files of its group that have a
/// backup (`rollback = true`), logging each restore.
pub fn roll_back(command: &str, changed: &[PathBuf], backups: &mut Backups) {
    for path in changed {
        let Some((backup, dir_mode)) = backups.remove(path) else {
            continue;
        };
        match backup.restore(dir_mode) {
            Ok(_) => tracing::warn!(
                path = %path.display(),
                hook = %command,
                "on_change hook failed: previous file restored (rollback)"
            ),
            Err(e) => tracing::error!(
                path = %path.display(),
                hook = %command,
                error = %e,
                "on_change hook failed and the previous file could not be restored"
            ),
        }
    }
}

/// Distinct hook commands (first-appearance order) → changed paths.
pub fn hook_groups(config: &Config, files: &[FileOutcome]) -> Vec<(String, Vec<PathBuf>)> {
    let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for (spec, outcome) in config.files.iter().zip(files) {
        let Some(command) = &spec.on_change else {
            continue;
        };
        if !outcome.change.is_change() {
            continue;
        }
        let path = outcome.path.clone();
        match groups.iter_mut().find(|(c, _)| c == command) {
            Some((_, paths)) => paths.push(path),
            None => groups.push((command.clone(), vec![path])),
        }
    }
    groups
}
