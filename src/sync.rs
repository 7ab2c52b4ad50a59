//! One sync round: fetch every declared secret → render every file → write
//! the changed ones → run each distinct `on_change` hook once.
//!
//! Invariants (SPEC.md "Writing files"):
//! * every file is rendered before any is written; in a one-shot round, a
//!   single fetch or render failure means nothing is written;
//! * hooks run only after all changed files of the round are in place, each
//!   distinct command once, with `KVSYNC_CHANGED` listing its changed files;
//! * nothing here prints a secret value: outcomes name paths and changes only.

pub mod changes;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::config::{Config, SecretKind, SecretSpec};
use crate::hooks::{self, HookError};
use crate::render::{self, RenderError, Renderer};
use crate::secret::SecretBytes;
use crate::vault::{SecretBundle, SecretListItem, VaultClient, VaultError};
use crate::write::{self, Change, Target, WriteError};

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

/// Threads that stage (write + fsync) the files of a one-shot round.
/// Concurrent fsyncs share the filesystem's journal commits; 8 gave most of
/// the gain for 500 files on ext4 (BENCHMARKS.md) without a thread per file.
pub const STAGE_THREADS: usize = 8;

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
}

impl Engine {
    pub fn new(config: Config, renderer: Renderer, vault: Arc<VaultClient>) -> Self {
        Self {
            config,
            renderer,
            vault,
            changes: changes::ChangeCache::default(),
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
    /// failures, sorted by alias.
    pub async fn fetch_each(&self) -> (render::Context, Vec<(String, VaultError)>) {
        let specs: Vec<&SecretSpec> = self.config.secrets.values().collect();
        let mut ctx = render::Context::default();
        let mut errors = Vec::new();
        for (spec, result) in self.get_many(specs).await {
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

    /// Like [`Engine::fetch_each`], for the agent's rounds: reuses the
    /// bundles of earlier rounds and GETs only what the vault's list shows
    /// as changed ([`changes`]); a secret absent from the list fails.
    pub async fn fetch_changed(&self) -> (render::Context, Vec<(String, VaultError)>) {
        let mut by_vault: BTreeMap<&str, Vec<&SecretSpec>> = BTreeMap::new();
        for spec in self.config.secrets.values() {
            by_vault.entry(spec.vault.as_str()).or_default().push(spec);
        }
        let mut ctx = render::Context::default();
        let mut errors = Vec::new();
        let mut to_get = Vec::new();
        let mut reused = 0usize;
        for specs in by_vault.into_values() {
            let listed = self.list_for(&specs).await;
            for spec in specs {
                match self.changes.plan(spec, listed.as_ref()) {
                    changes::Plan::Reuse(bundle) => {
                        reused += 1;
                        ctx.secrets.insert(spec.alias.clone(), bundle);
                    }
                    changes::Plan::Get => to_get.push(spec),
                    changes::Plan::Gone(e) => errors.push((spec.alias.clone(), e)),
                }
            }
        }
        tracing::debug!(reused, fetching = to_get.len(), "change detection");
        for (spec, result) in self.get_many(to_get).await {
            match result {
                Ok(bundle) => {
                    self.changes.store(spec, &bundle);
                    ctx.secrets.insert(spec.alias.clone(), bundle);
                }
                Err(e) => {
                    self.changes.forget(&spec.alias);
                    errors.push((spec.alias.clone(), e));
                }
            }
        }
        errors.sort_by(|a, b| a.0.cmp(&b.0));
        (ctx, errors)
    }

    /// The list of the vault `specs` share, by lowercase name, when it is
    /// worth listing this round and listing succeeds.
    async fn list_for(&self, specs: &[&SecretSpec]) -> Option<HashMap<String, SecretListItem>> {
        let vault = &specs.first()?.vault;
        if !self.changes.should_list(vault, specs) {
            return None;
        }
        match self.vault.list_secrets(vault).await {
            Ok(items) => {
                self.changes.listed(vault, items.len(), specs.len());
                Some(
                    items
                        .into_iter()
                        .map(|i| (i.name.to_ascii_lowercase(), i))
                        .collect(),
                )
            }
            Err(e) => {
                self.changes.list_failed(vault, &e);
                None
            }
        }
    }

    /// GET `specs`, at most `[agent] concurrency` at once.
    async fn get_many<'a>(
        &self,
        specs: Vec<&'a SecretSpec>,
    ) -> Vec<(&'a SecretSpec, Result<SecretBundle, VaultError>)> {
        let concurrency = self.config.agent.concurrency.max(1);
        futures::stream::iter(specs)
            .map(|spec| async move {
                let got = self
                    .vault
                    .get_secret(&spec.vault, &spec.name, spec.version.as_deref())
                    .await;
                (spec, got)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
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
            let _ = bundle;
            errors.push(SyncError::Certificate {
                alias: spec.alias.clone(),
                message: "certificate objects are not supported yet".to_owned(),
            });
        }
        errors
    }

    /// Render file number `index`.
    pub fn render_one(
        &self,
        index: usize,
        ctx: &render::Context,
    ) -> Result<SecretBytes, RenderError> {
        self.renderer.render(index, ctx)
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
            self.render_all(&ctx)
        })
        .await
        .map_err(|_| SyncError::Deadline(deadline))??;
        if options.dry_run {
            return self.plan(&rendered);
        }
        let files = self.write_all(&rendered)?;
        let hooks_run = self.run_hooks(&files).await?;
        Ok(RoundReport { files, hooks_run })
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

    /// Stage every changed file first (temp files next to their
    /// destinations, written and fsynced by up to [`STAGE_THREADS`]
    /// threads), then commit them all and fsync each directory once: a
    /// failure while staging leaves every destination untouched.
    fn write_all(&self, rendered: &[SecretBytes]) -> Result<Vec<FileOutcome>, SyncError> {
        let staged = self.stage_all(rendered)?;
        let mut files = Vec::with_capacity(staged.len());
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut failed = None;
        for (path, candidate) in staged {
            let change = match candidate.map(write::Staged::commit_without_dir_sync) {
                Some(Ok(change)) => change,
                Some(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                None => Change::Unchanged,
            };
            // One committed file per directory, to fsync its parent once.
            if change.is_change() && !dirs.iter().any(|d| d.parent() == path.parent()) {
                dirs.push(path.clone());
            }
            match change {
                Change::Unchanged => tracing::debug!(path = %path.display(), "unchanged"),
                other => tracing::info!(path = %path.display(), change = ?other, "file written"),
            }
            files.push(FileOutcome { path, change });
        }
        // Renames already done are made durable even if a later one failed.
        for file in &dirs {
            write::sync_parent_dir(file)?;
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(files),
        }
    }

    /// [`write::stage`] every file, in order, spread over threads: each
    /// stage is an `fsync`, and concurrent ones share journal commits.
    fn stage_all(
        &self,
        rendered: &[SecretBytes],
    ) -> Result<Vec<(PathBuf, Option<write::Staged>)>, SyncError> {
        let chunk = rendered.len().div_ceil(STAGE_THREADS).max(1);
        let stage_chunk = |start: usize, part: &[SecretBytes]| {
            part.iter()
                .enumerate()
                .map(|(i, bytes)| {
                    let target = self.target(start + i);
                    write::stage(&target, bytes.expose()).map(|s| (target.path, s))
                })
                .collect::<Result<Vec<_>, WriteError>>()
        };
        let parts: Vec<Result<Vec<_>, WriteError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = rendered
                .chunks(chunk)
                .enumerate()
                .map(|(n, part)| (n * chunk, scope.spawn(move || stage_chunk(n * chunk, part))))
                .collect();
            handles
                .into_iter()
                .map(|(start, h)| {
                    h.join().unwrap_or_else(|_| {
                        Err(WriteError {
                            path: self.target(start).path,
                            action: "stage (the writer thread panicked)",
                            source: std::io::Error::other("panic"),
                        })
                    })
                })
                .collect()
        });
        let mut staged = Vec::with_capacity(rendered.len());
        for part in parts {
            staged.extend(part?);
        }
        Ok(staged)
    }

    /// Run each distinct `on_change` command once, in config order, with the
    /// files of this round that changed and name it.
    async fn run_hooks(&self, files: &[FileOutcome]) -> Result<Vec<String>, SyncError> {
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

/// Distinct hook commands (first-appearance order) → changed paths.
pub fn hook_groups(config: &Config, files: &[FileOutcome]) -> Vec<(String, Vec<PathBuf>)> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (spec, outcome) in config.files.iter().zip(files) {
        let Some(command) = &spec.on_change else {
            continue;
        };
        if !outcome.change.is_change() {
            continue;
        }
        if !groups.contains_key(command) {
            order.push(command.clone());
        }
        groups
            .entry(command.clone())
            .or_default()
            .push(outcome.path.clone());
    }
    order
        .into_iter()
        .filter_map(|c| groups.remove(&c).map(|paths| (c, paths)))
        .collect()
}
