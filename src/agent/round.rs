//! One round of the long-running agent. Unlike `once`, a failure is
//! isolated: a file whose secret or template fails keeps its last good
//! contents while other files update; files that share an `on_change` hook
//! form a group that is written together or not at all (a key and its
//! certificate never diverge). Hooks that failed are retried next round.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::hooks;
use crate::sync::{Backups, Engine, SyncError, commit_with_backup, roll_back, verify_one};
use crate::write::{self, Change};

use super::metrics::Metrics;

/// Hooks whose last run failed, with the paths they were run for; carried
/// across rounds so a failed reload is retried even though the files are
/// now unchanged on disk.
#[derive(Debug, Default)]
pub struct PendingHooks(BTreeMap<String, Vec<PathBuf>>);

impl PendingHooks {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a round did.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    /// One line per failure (kind and message), no secret values.
    pub failures: Vec<(&'static str, String)>,
    /// Whether every failure is worth a quick retry (outage) rather than
    /// waiting for an operator.
    pub transient: bool,
    pub files_written: usize,
    pub hooks_run: usize,
    /// The round stopped early because of a shutdown request.
    pub interrupted: bool,
}

impl RoundOutcome {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Stable summary for "log once per state change".
    pub fn state_key(&self) -> String {
        let mut lines: Vec<String> = self
            .failures
            .iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// Files grouped by hook: `(hook, file indexes)` in first-appearance order;
/// files without a hook are groups of one.
fn groups(engine: &Engine) -> Vec<(Option<String>, Vec<usize>)> {
    let mut out: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for (index, file) in engine.config().files.iter().enumerate() {
        match &file.on_change {
            Some(cmd) => match out.iter_mut().find(|(c, _)| c.as_deref() == Some(cmd)) {
                Some((_, members)) => members.push(index),
                None => out.push((Some(cmd.clone()), vec![index])),
            },
            None => out.push((None, vec![index])),
        }
    }
    out
}

pub async fn run(
    engine: &Engine,
    pending: &mut PendingHooks,
    metrics: &Metrics,
    stop: &mut watch::Receiver<bool>,
) -> RoundOutcome {
    let mut outcome = RoundOutcome {
        transient: true,
        ..RoundOutcome::default()
    };
    let deadline = engine.config().agent.deadline;
    // Fetching is abandoned on shutdown: nothing has been written yet.
    let fetched = tokio::select! {
        r = tokio::time::timeout(deadline, engine.fetch_changed()) => r,
        _ = stop.wait_for(|s| *s) => {
            outcome.interrupted = true;
            return outcome;
        }
    };
    let Ok((mut ctx, fetch_errors)) = fetched else {
        record(
            &mut outcome,
            metrics,
            &SyncError::Deadline(deadline),
            "vault",
        );
        return outcome;
    };
    for (alias, e) in fetch_errors {
        let kind = match e {
            crate::vault::VaultError::Identity(_) => "identity",
            _ => "vault",
        };
        outcome.transient &= e.is_transient();
        metrics.failure(kind);
        outcome
            .failures
            .push((kind, format!("secret '{alias}': {e}")));
    }
    for e in engine.add_certificates(&mut ctx) {
        record(&mut outcome, metrics, &e, "certificate");
    }
    for (alias, not_after) in engine.warn_expiring(&ctx) {
        metrics.certificate_expires(&alias, not_after);
    }
    for (alias, bundle) in &ctx.secrets {
        if let Some(exp) = bundle.expires {
            metrics.secret_expires(alias, exp);
        }
    }
    let mut backups = Backups::new();
    let prepared = engine.prepare(&ctx);
    for (hook, members) in groups(engine) {
        if *stop.borrow() {
            outcome.interrupted = true;
            break;
        }
        let mut group = Group {
            engine,
            ctx: &ctx,
            prepared: &prepared,
            pending: &mut *pending,
            backups: &mut backups,
            metrics,
            outcome: &mut outcome,
        };
        group.write(hook, &members).await;
    }
    write_fanouts(engine, &ctx, pending, metrics, &mut outcome);
    run_pending(engine, pending, &mut backups, metrics, &mut outcome).await;
    outcome
}

/// Fan-out directories (`selection`, `ccs`): each written on its own (a
/// failing one keeps its files); changed paths join their hook's pending
/// list. A directory whose selection or certificate failed this round is
/// skipped (it keeps its files).
fn write_fanouts(
    engine: &Engine,
    ctx: &crate::render::Context,
    pending: &mut PendingHooks,
    metrics: &Metrics,
    outcome: &mut RoundOutcome,
) {
    let (plans, errors) = crate::fanout::plan_all(engine.config(), ctx);
    for e in errors {
        outcome.transient = false;
        metrics.failure("render");
        outcome.failures.push(("render", e));
    }
    for plan in plans {
        match engine.apply_fanouts(std::slice::from_ref(&plan), false) {
            Ok((files, groups)) => {
                let written = files.iter().filter(|f| f.change.is_change()).count();
                metrics.files_written.inc_by(written as u64);
                outcome.files_written += written;
                for (cmd, paths) in groups {
                    let list = pending.0.entry(cmd).or_default();
                    for p in paths {
                        if !list.contains(&p) {
                            list.push(p);
                        }
                    }
                }
            }
            Err(e) => {
                outcome.transient = false;
                metrics.failure("write");
                outcome.failures.push(("write", e.to_string()));
            }
        }
    }
}

fn record(outcome: &mut RoundOutcome, metrics: &Metrics, e: &SyncError, kind: &'static str) {
    outcome.transient &= e.is_transient();
    metrics.failure(kind);
    outcome.failures.push((kind, e.to_string()));
}

/// What one group's write needs from the round.
struct Group<'a> {
    engine: &'a Engine,
    ctx: &'a crate::render::Context,
    /// The round's template context, built once for all groups.
    prepared: &'a crate::render::Prepared,
    pending: &'a mut PendingHooks,
    backups: &'a mut Backups,
    metrics: &'a Metrics,
    outcome: &'a mut RoundOutcome,
}

impl Group<'_> {
    fn fail(&mut self, kind: &'static str, message: String, members: usize) {
        self.outcome.transient = false;
        self.metrics.failure(kind);
        self.outcome
            .failures
            .push((kind, group_note(message, members)));
    }

    /// Render, stage, verify and commit one group, all or nothing. The only
    /// `.await` is the members' `verify` commands (bounded by the hook
    /// timeout), before anything is committed: the round is not cancelled
    /// there, a shutdown waits for it, so a group is never half-written.
    async fn write(&mut self, hook: Option<String>, members: &[usize]) {
        let mut staged = Vec::with_capacity(members.len());
        for &index in members {
            let target = self.engine.target(index);
            let rendered = match self.engine.render_prepared(index, self.ctx, self.prepared) {
                Ok(r) => r,
                Err(e) => return self.fail("render", e.to_string(), members.len()),
            };
            match write::stage(&target, rendered.expose()) {
                Ok(s) => staged.push((index, target.path, s)),
                Err(e) => return self.fail("write", e.to_string(), members.len()),
            }
        }
        let files = &self.engine.config().files;
        let timeout = self.engine.config().agent.hook_timeout;
        for (index, path, candidate) in &staged {
            let (Some(command), Some(candidate)) = (&files[*index].verify, candidate) else {
                continue;
            };
            if let Err(e) = verify_one(command, candidate, path, timeout).await {
                return self.fail("verify", e, members.len());
            }
        }
        let changed = self.commit(staged);
        if let (Some(cmd), false) = (hook, changed.is_empty()) {
            let paths = self.pending.0.entry(cmd).or_default();
            for p in changed {
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
    }

    /// Commit the staged members; returns the paths that changed.
    fn commit(&mut self, staged: Vec<(usize, PathBuf, Option<write::Staged>)>) -> Vec<PathBuf> {
        let files = &self.engine.config().files;
        let now = unix_now();
        let mut changed = Vec::new();
        for (index, path, candidate) in staged {
            let spec = &files[index];
            let committed = match candidate {
                Some(c) if spec.rollback => commit_with_backup(c, spec.dir_mode, self.backups),
                Some(c) => c.commit(),
                None => Ok(Change::Unchanged),
            };
            let change = match committed {
                Ok(change) => change,
                Err(e) => {
                    self.metrics.failure("write");
                    self.outcome.failures.push(("write", e.to_string()));
                    continue;
                }
            };
            self.metrics.file_ok(&path.display().to_string(), now);
            if change.is_change() {
                tracing::info!(path = %path.display(), change = ?change, "file written");
                self.metrics.files_written.inc();
                self.outcome.files_written += 1;
                changed.push(path);
            }
        }
        changed
    }
}

fn group_note(message: String, members: usize) -> String {
    if members > 1 {
        format!("{message} (its hook group of {members} files left untouched)")
    } else {
        message
    }
}

/// Run every pending hook once; failures stay pending for the next round,
/// except in a `rollback = true` group whose files were written this round:
/// those are restored instead, and the next round writes (and hooks) again.
async fn run_pending(
    engine: &Engine,
    pending: &mut PendingHooks,
    backups: &mut Backups,
    metrics: &Metrics,
    outcome: &mut RoundOutcome,
) {
    let timeout: Duration = engine.config().agent.hook_timeout;
    let hooks = std::mem::take(&mut pending.0);
    for (cmd, paths) in hooks {
        tracing::info!(hook = %cmd, files = paths.len(), "running on_change hook");
        match hooks::run(&cmd, &paths, timeout).await {
            Ok(()) => {
                metrics.hooks_run.inc();
                outcome.hooks_run += 1;
            }
            Err(e) => {
                metrics.hooks_run.inc();
                metrics.hooks_failed.inc();
                outcome.failures.push(("hook", e.to_string()));
                if paths.iter().any(|p| backups.contains_key(p)) {
                    roll_back(&cmd, &paths, backups);
                } else {
                    pending.0.insert(cmd, paths);
                }
            }
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
