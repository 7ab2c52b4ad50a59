//! One round, written once for `kvsync once`, `kvsync run` and
//! `kvsync check --online`: [`Engine::round`].
//!
//! ```text
//! ┌──────────── bounded by [agent] deadline, abandoned on stop ────────────┐
//! identity → fetch → certificates → render → stage → verify │ commit → hooks
//! └──────────────────────── nothing written yet ─────────────┘  (never cut)
//! ```
//!
//! * The deadline bounds everything before the first write; a round that
//!   misses it writes nothing. Commits are never interrupted; each hook and
//!   `verify` command has its own `hook_timeout`.
//! * The [`Policy`] decides what a failure costs: [`Policy::AllOrNothing`]
//!   (`once`) writes nothing if anything failed before the first write;
//!   [`Policy::PerGroup`] (`run`) writes every hook group whose files all
//!   rendered, staged and verified, and keeps the others' last good files.
//! * Hooks run from a [`HookQueue`] in config order (first appearance of each
//!   command), once per round, after all commits; a failed hook stays queued
//!   for the next round (in [`RoundState`]) unless its `rollback = true`
//!   files were restored instead.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::watch;

use super::Engine;
use super::changes::ChangeCache;
use super::failure::SyncError;
use super::stage::{self, Backups, StagedFile};
use crate::certs::CertMaterial;
use crate::config::Config;
use crate::hooks::{self, Hook};
use crate::render;
use crate::secret::SecretBytes;
use crate::store::StoreReport;
use crate::write::{self, Change};

/// What a failure before the first write costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Any failure: nothing is written, no hook runs (`kvsync once`).
    AllOrNothing,
    /// A failure keeps only its hook group (files sharing an `on_change`
    /// command; a file without one is a group of its own) from being
    /// written; the other groups update (`kvsync run`).
    PerGroup,
}

/// How far a round goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Fetch and normalise certificates; the outcome carries the context
    /// (`check --online`).
    Fetch,
    /// Also render, and report what a write would do (`--dry-run`).
    Plan,
    /// The whole round.
    Write,
}

#[derive(Clone, Copy, Debug)]
pub struct RoundOptions {
    pub policy: Policy,
    pub scope: Scope,
}

impl RoundOptions {
    /// `kvsync once` (`--dry-run`: plan only).
    pub fn once(dry_run: bool) -> Self {
        Self {
            policy: Policy::AllOrNothing,
            scope: if dry_run { Scope::Plan } else { Scope::Write },
        }
    }

    /// A round of `kvsync run`.
    pub fn agent() -> Self {
        Self {
            policy: Policy::PerGroup,
            scope: Scope::Write,
        }
    }

    /// `kvsync check --online`.
    pub fn check() -> Self {
        Self {
            policy: Policy::PerGroup,
            scope: Scope::Fetch,
        }
    }
}

/// Hooks to run, each with the files it is run for, kept in config order.
#[derive(Debug, Default)]
pub struct HookQueue(Vec<(Hook, Vec<PathBuf>)>);

impl HookQueue {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Queue `command` for `paths` (merged with what is already queued).
    fn push(&mut self, command: &Hook, paths: impl IntoIterator<Item = PathBuf>) {
        let at = match self.0.iter().position(|(c, _)| c == command) {
            Some(at) => at,
            None => {
                self.0.push((command.clone(), Vec::new()));
                self.0.len() - 1
            }
        };
        let queued = &mut self.0[at].1;
        for p in paths {
            if !queued.contains(&p) {
                queued.push(p);
            }
        }
    }

    /// Take every queued hook, in the config's hook order (commands no
    /// longer in the config last, as queued).
    fn take_in_order(&mut self, config: &Config) -> Vec<(Hook, Vec<PathBuf>)> {
        let order = hook_order(config);
        let mut all = std::mem::take(&mut self.0);
        all.sort_by_key(|(c, _)| order.iter().position(|o| *o == c).unwrap_or(usize::MAX));
        all
    }
}

/// Distinct `on_change` commands in config order (first appearance; the
/// fan-out directories' after the single files').
fn hook_order(config: &Config) -> Vec<&Hook> {
    let mut out: Vec<&Hook> = Vec::new();
    let commands = config.files.iter().map(|f| f.on_change.as_ref());
    let fanouts = config.fanouts.iter().map(|f| f.on_change.as_ref());
    let stores = config.stores.iter().map(|s| s.on_change.as_ref());
    for c in commands.chain(fanouts).chain(stores).flatten() {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// State a caller keeps across rounds (and the agent across reloads):
/// change detection's last good bundles, the certificates already warned
/// about, the hooks still to run.
#[derive(Default)]
pub struct RoundState {
    pub(crate) changes: ChangeCache,
    /// Thumbprints already warned about (expiry): warned once per
    /// certificate version, not every round; the metric stays current.
    pub(crate) expiry_warned: Mutex<BTreeSet<String>>,
    /// Bundles of selected secrets (`[selections]`).
    pub(crate) select: super::select::SelectionCache,
    pub hooks: HookQueue,
}

impl RoundState {
    /// After a reload: forget what belongs to secrets no longer declared.
    pub fn retain_declared(&mut self, config: &Config) {
        self.changes
            .retain(|alias| config.secrets.contains_key(alias));
    }
}

/// What happened (or, in a dry run, would happen) to one file.
#[derive(Clone, Debug)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub change: Change,
}

/// What a round did. `files` lists the files written or confirmed up to
/// date (planned, in a dry run), in config order.
#[derive(Default)]
pub struct Outcome {
    pub files: Vec<FileOutcome>,
    /// Hook commands that ran and succeeded, in the order they ran.
    pub hooks_run: Vec<String>,
    /// Hooks that ran and failed.
    pub hooks_failed: usize,
    pub failures: Vec<SyncError>,
    /// The round stopped early because of a stop request (nothing written).
    pub interrupted: bool,
    /// Every delivered certificate: (alias, notAfter as Unix seconds).
    pub certificates: Vec<(String, i64)>,
    /// Every fetched secret with an `expires` attribute: (alias, Unix s).
    pub secret_expiries: Vec<(String, i64)>,
    /// The fetched secrets and certificates ([`Scope::Fetch`] only).
    pub context: Option<render::Context>,
    /// The rendered `[env]` (`kvsync exec`), when the config has one and
    /// it rendered this round. Secret: never log it.
    pub env: Option<crate::exec::EnvValues>,
    /// What each `[[store]]` did (or, in a dry run, would do).
    pub stores: Vec<StoreReport>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Whether every failure is worth a quick retry (outage) rather than
    /// waiting for an operator.
    pub fn transient(&self) -> bool {
        self.failures.iter().all(SyncError::is_transient)
    }

    pub fn changed(&self) -> impl Iterator<Item = &FileOutcome> {
        self.files.iter().filter(|f| f.change.is_change())
    }

    /// Stable summary for "log once per state change".
    pub fn state_key(&self) -> String {
        let mut lines: Vec<String> = self
            .failures
            .iter()
            .map(|e| format!("{}: {e}", e.kind()))
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// Every failure, one per line.
    pub fn failure_text(&self) -> String {
        self.failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Files grouped by hook, in config order of first appearance; a file
/// without a hook is a group of its own.
struct HookGroup {
    hook: Option<Hook>,
    members: Vec<usize>,
}

fn hook_groups(config: &Config) -> Vec<HookGroup> {
    let mut out: Vec<HookGroup> = Vec::new();
    for (index, file) in config.files.iter().enumerate() {
        let existing = file
            .on_change
            .as_ref()
            .and_then(|cmd| out.iter_mut().find(|g| g.hook.as_ref() == Some(cmd)));
        match existing {
            Some(group) => group.members.push(index),
            None => out.push(HookGroup {
                hook: file.on_change.clone(),
                members: vec![index],
            }),
        }
    }
    out
}

/// The part of a round before the first write.
struct Prepared {
    /// Staged (or, in a plan, rendered) groups ready to commit.
    ready: Vec<(HookGroup, Vec<StagedFile>)>,
    planned: Vec<FileOutcome>,
    /// `[[store]]` indexes with their certificate, for the store step.
    stores: Vec<(usize, CertMaterial)>,
    /// Fan-out directories rendered this round ([`crate::fanout`]).
    fanouts: Vec<crate::fanout::Plan>,
}

/// A fan-out directory's files as outcomes (a removal counts as `Updated`).
fn fanout_outcomes(applied: crate::fanout::Applied) -> Vec<FileOutcome> {
    let removed = applied.removed.into_iter().map(|path| FileOutcome {
        path,
        change: Change::Updated,
    });
    applied
        .written
        .into_iter()
        .map(|(path, change)| FileOutcome { path, change })
        .chain(removed)
        .collect()
}

/// Resolves when `stop` turns true; never when its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Engine {
    /// Run one round (see the module docs): the only place that fetches,
    /// renders, stages, verifies, commits and runs hooks. `stop` abandons
    /// the round before its first write; once writing has started it
    /// finishes.
    pub async fn round(
        &self,
        state: &mut RoundState,
        options: RoundOptions,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let deadline = self.config().agent.deadline;
        let before_write = tokio::select! {
            r = tokio::time::timeout(deadline, self.prepare(state, options, &mut outcome)) => r,
            () = stopped(stop) => {
                outcome.interrupted = true;
                return outcome;
            }
        };
        let Ok(prepared) = before_write else {
            outcome.failures.push(SyncError::Deadline(deadline));
            return outcome;
        };
        let Some(prepared) = prepared else {
            return outcome;
        };
        let Prepared {
            ready,
            planned,
            fanouts,
            stores,
        } = prepared;
        if options.scope != Scope::Write {
            outcome.files = planned;
            self.sync_stores(&stores, true, state, &mut outcome);
            return outcome;
        }
        let mut backups = Backups::new();
        self.commit(ready, options.policy, state, &mut backups, &mut outcome);
        // All or nothing: a failed commit stops the round's writes here.
        if options.policy == Policy::PerGroup || outcome.failures.is_empty() {
            self.write_fanouts(&fanouts, state, &mut outcome);
            self.sync_stores(&stores, false, state, &mut outcome);
        }
        self.run_hooks(state, &mut backups, &mut outcome).await;
        outcome
    }

    /// Fetch → certificates → render → stage → verify. `None` when nothing
    /// is to be written (all-or-nothing after a failure, or a fetch-only
    /// round); failures go to `outcome`.
    async fn prepare(
        &self,
        state: &RoundState,
        options: RoundOptions,
        outcome: &mut Outcome,
    ) -> Option<Prepared> {
        let all_or_nothing = options.policy == Policy::AllOrNothing;
        let (mut ctx, mut fetch_errors) = self.fetch(&state.changes).await;
        self.fetch_extras(&mut ctx, &mut fetch_errors, &state.select)
            .await;
        outcome.failures.extend(fetch_errors);
        if all_or_nothing && !outcome.failures.is_empty() {
            return None;
        }
        outcome.failures.extend(self.add_certificates(&mut ctx));
        outcome.certificates = self.warn_expiring(&ctx, &state.expiry_warned);
        outcome.secret_expiries = ctx
            .secrets
            .iter()
            .filter_map(|(alias, b)| b.expires.map(|e| (alias.clone(), e)))
            .collect();
        if options.scope == Scope::Fetch {
            outcome.context = Some(ctx);
            return None;
        }
        if all_or_nothing && !outcome.failures.is_empty() {
            return None;
        }
        let groups = hook_groups(self.config());
        let prepared = self.renderer.prepare(&ctx);
        if self.renderer.has_env() {
            match self.renderer.render_env(&ctx, &prepared) {
                Ok(env) => outcome.env = Some(env),
                Err(errors) => outcome
                    .failures
                    .extend(errors.into_iter().map(SyncError::Render)),
            }
        }
        let mut rendered: Vec<Option<SecretBytes>> = Vec::with_capacity(self.config().files.len());
        let mut render_failed = vec![false; groups.len()];
        let mut render_errors = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            for &index in &group.members {
                match self.renderer.render_prepared(index, &ctx, &prepared) {
                    Ok(bytes) => rendered.push(Some(bytes)),
                    Err(e) => {
                        rendered.push(None);
                        render_failed[g] = true;
                        render_errors.push((g, SyncError::Render(e)));
                    }
                }
            }
        }
        self.fail_groups(&groups, render_errors, options.policy, outcome);
        let (fanouts, fanout_errors) = crate::fanout::plan_all(self.config(), &ctx);
        outcome
            .failures
            .extend(fanout_errors.into_iter().map(SyncError::Fanout));
        if all_or_nothing && !outcome.failures.is_empty() {
            return None;
        }
        // `rendered` is in group order; index it by file.
        let order: Vec<usize> = groups.iter().flat_map(|g| g.members.clone()).collect();
        let mut by_file: Vec<Option<SecretBytes>> = (0..order.len()).map(|_| None).collect();
        for (index, bytes) in order.into_iter().zip(rendered) {
            by_file[index] = bytes;
        }
        let stores: Vec<(usize, CertMaterial)> = self
            .config()
            .stores
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| ctx.certs.get(&spec.alias).map(|c| (i, c.clone())))
            .collect();
        if options.scope == Scope::Plan {
            let mut planned = self.plan(&by_file, outcome);
            planned.extend(self.plan_fanouts(&fanouts, outcome));
            return Some(Prepared {
                ready: Vec::new(),
                planned,
                fanouts: Vec::new(),
                stores,
            });
        }
        let ok_groups: Vec<(usize, HookGroup)> = groups
            .into_iter()
            .enumerate()
            .filter(|(g, _)| !render_failed[*g])
            .collect();
        let jobs: Vec<(usize, &SecretBytes)> = ok_groups
            .iter()
            .flat_map(|(_, group)| group.members.iter().copied())
            .filter_map(|index| by_file[index].as_ref().map(|b| (index, b)))
            .collect();
        let mut staged = stage::stage_all(self, &jobs);
        let mut ready = Vec::new();
        let mut failures = Vec::new();
        for (_, group) in ok_groups {
            let mut files = Vec::with_capacity(group.members.len());
            let mut errors = Vec::new();
            for &index in &group.members {
                match staged.remove(&index) {
                    Some(Ok(s)) => files.push(s),
                    Some(Err(e)) => errors.push(SyncError::Write(e)),
                    None => {}
                }
            }
            if errors.is_empty() {
                errors = self.verify(&files).await;
            }
            if errors.is_empty() {
                ready.push((group, files));
            } else {
                let members = group.members.len();
                failures.extend(errors.into_iter().map(|e| match options.policy {
                    Policy::PerGroup => e.in_group(members),
                    Policy::AllOrNothing => e,
                }));
            }
        }
        outcome.failures.extend(failures);
        if all_or_nothing && !outcome.failures.is_empty() {
            return None;
        }
        Some(Prepared {
            ready,
            planned: Vec::new(),
            fanouts,
            stores,
        })
    }

    /// What writing each fan-out directory would do (`--dry-run`); a file
    /// that left its selection shows as changed.
    fn plan_fanouts(
        &self,
        plans: &[crate::fanout::Plan],
        outcome: &mut Outcome,
    ) -> Vec<FileOutcome> {
        let mut files = Vec::new();
        for plan in plans {
            let Some(spec) = self.config().fanouts.get(plan.index) else {
                continue;
            };
            match crate::fanout::apply(spec, plan, true) {
                Ok(applied) => files.extend(fanout_outcomes(applied)),
                Err(e) => outcome.failures.push(SyncError::Write(e)),
            }
        }
        files
    }

    /// Write each fan-out directory on its own (after the single files,
    /// never interrupted); queue its hook when it changed.
    fn write_fanouts(
        &self,
        plans: &[crate::fanout::Plan],
        state: &mut RoundState,
        outcome: &mut Outcome,
    ) {
        for plan in plans {
            let Some(spec) = self.config().fanouts.get(plan.index) else {
                continue;
            };
            match crate::fanout::apply(spec, plan, false) {
                Ok(applied) => {
                    let changed = applied.changed();
                    if let (Some(hook), false) = (&spec.on_change, changed.is_empty()) {
                        state.hooks.push(hook, changed);
                    }
                    outcome.files.extend(fanout_outcomes(applied));
                }
                Err(e) => outcome.failures.push(SyncError::Write(e)),
            }
        }
    }

    /// Record render failures, noting the group in a per-group round.
    fn fail_groups(
        &self,
        groups: &[HookGroup],
        errors: Vec<(usize, SyncError)>,
        policy: Policy,
        outcome: &mut Outcome,
    ) {
        for (g, e) in errors {
            outcome.failures.push(match policy {
                Policy::PerGroup => e.in_group(groups[g].members.len()),
                Policy::AllOrNothing => e,
            });
        }
    }

    /// What writing each rendered file would do (`--dry-run`).
    fn plan(&self, rendered: &[Option<SecretBytes>], outcome: &mut Outcome) -> Vec<FileOutcome> {
        let mut files = Vec::with_capacity(rendered.len());
        for (index, bytes) in rendered.iter().enumerate() {
            let Some(bytes) = bytes else { continue };
            let target = self.target(index);
            match write::plan(&target, bytes.expose()) {
                Ok(change) => files.push(FileOutcome {
                    path: target.path,
                    change,
                }),
                Err(e) => outcome.failures.push(SyncError::Write(e)),
            }
        }
        files
    }

    /// Run the `verify` command of every changed member against its
    /// candidate; every rejection is reported.
    async fn verify(&self, files: &[StagedFile]) -> Vec<SyncError> {
        let mut errors = Vec::new();
        let timeout = self.config().agent.hook_timeout;
        for (index, path, candidate) in files {
            let (Some(command), Some(candidate)) = (&self.config().files[*index].verify, candidate)
            else {
                continue;
            };
            tracing::info!(path = %path.display(), verify = %command, "verifying candidate");
            if let Err(error) =
                hooks::verify(command, candidate.candidate_path(), path, timeout).await
            {
                tracing::error!(path = %path.display(), error = %error, "verify rejected the new file; the live file is kept");
                errors.push(SyncError::Verify {
                    path: path.clone(),
                    error,
                });
            }
        }
        errors
    }

    /// Commit the ready groups (never interrupted), then fsync each
    /// directory once; queue the hooks of the groups that changed. A commit
    /// failure skips the rest of its group (and, all-or-nothing, every
    /// later group).
    fn commit(
        &self,
        ready: Vec<(HookGroup, Vec<StagedFile>)>,
        policy: Policy,
        state: &mut RoundState,
        backups: &mut Backups,
        outcome: &mut Outcome,
    ) {
        let files = &self.config().files;
        let mut unsynced: Vec<PathBuf> = Vec::new();
        'groups: for (group, staged) in ready {
            let mut changed = Vec::new();
            let mut failed = false;
            for (index, path, candidate) in staged {
                let committed = match candidate {
                    Some(c) if files[index].rollback => {
                        stage::commit_with_backup(c, files[index].dir_mode, backups)
                    }
                    Some(c) => c.commit_without_dir_sync().inspect(|_| {
                        if !unsynced.iter().any(|p| p.parent() == path.parent()) {
                            unsynced.push(path.clone());
                        }
                    }),
                    None => Ok(Change::Unchanged),
                };
                match committed {
                    Ok(change) => {
                        if change.is_change() {
                            tracing::info!(path = %path.display(), change = ?change, "file written");
                            changed.push(path.clone());
                        } else {
                            tracing::debug!(path = %path.display(), "unchanged");
                        }
                        outcome.files.push(FileOutcome { path, change });
                    }
                    Err(e) => {
                        outcome.failures.push(SyncError::Write(e));
                        failed = true;
                        break;
                    }
                }
            }
            if let (Some(hook), false) = (&group.hook, changed.is_empty()) {
                state.hooks.push(hook, changed);
            }
            if failed && policy == Policy::AllOrNothing {
                break 'groups;
            }
        }
        if let Err(e) = stage::sync_dirs(&unsynced) {
            outcome.failures.push(SyncError::Write(e));
        }
    }

    /// The `[[store]]` step (after the files, before the hooks): each
    /// store brought in step with its certificate; a store that added a
    /// version queues its hook with `KVSYNC_CHANGED` = the new thumbprint.
    fn sync_stores(
        &self,
        stores: &[(usize, CertMaterial)],
        dry_run: bool,
        state: &mut RoundState,
        outcome: &mut Outcome,
    ) {
        for (index, material) in stores {
            let spec = &self.config().stores[*index];
            match crate::store::sync(spec, material, dry_run) {
                Ok(report) => {
                    if !dry_run && report.changed() {
                        tracing::info!(
                            store = %report.store,
                            alias = %report.alias,
                            thumbprint = %report.thumbprint,
                            added = report.added,
                            intermediates = ?report.intermediates,
                            linked = ?report.linked,
                            rebound = ?report.rebound,
                            removed = ?report.removed,
                            kept_bound = ?report.kept_bound,
                            "certificate store updated"
                        );
                    } else if !dry_run {
                        tracing::debug!(store = %report.store, thumbprint = %report.thumbprint, "certificate store unchanged");
                    }
                    if let (false, true, Some(hook)) = (dry_run, report.added, &spec.on_change) {
                        state.hooks.push(hook, [PathBuf::from(&report.thumbprint)]);
                    }
                    outcome.stores.push(report);
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate store step failed");
                    outcome.failures.push(SyncError::Store(e));
                }
            }
        }
    }

    /// Run every queued hook once, in config order. A failed hook stays
    /// queued, except in a `rollback = true` group whose files were written
    /// this round: those are restored instead, and the next round writes
    /// (and hooks) again.
    async fn run_hooks(
        &self,
        state: &mut RoundState,
        backups: &mut Backups,
        outcome: &mut Outcome,
    ) {
        let timeout = self.config().agent.hook_timeout;
        for (command, paths) in state.hooks.take_in_order(self.config()) {
            tracing::info!(hook = %command, files = paths.len(), "running on_change hook");
            match hooks::run(&command, &paths, timeout).await {
                Ok(()) => outcome.hooks_run.push(command.to_string()),
                Err(e) => {
                    tracing::error!(error = %e, "on_change hook failed");
                    outcome.hooks_failed += 1;
                    outcome.failures.push(SyncError::Hook(e));
                    if paths.iter().any(|p| backups.contains_key(p)) {
                        stage::roll_back(&command, &paths, backups);
                    } else {
                        state.hooks.push(&command, paths);
                    }
                }
            }
        }
    }
}
