//! `kvsync once`: one sync round, then exit. All or nothing by default;
//! `--keep-going` (or `[agent] keep_going`) isolates hook groups as `run`
//! does; `--wait` (or `[agent] once_wait`) retries transient failures
//! within a budget ([`crate::sync::retry`]).

use std::io::Write;
use std::time::Duration;

use crate::app::AppError;
use crate::sync::retry::{self, Backoff, Transient};
use crate::sync::{Engine, FailureKind, Outcome, Policy, RoundOptions, RoundState};
use crate::write::Change;

/// How `once` runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub dry_run: bool,
    /// Per hook group instead of all or nothing.
    pub keep_going: bool,
    /// Retry budget for transient failures.
    pub wait: Option<Duration>,
}

/// A round that failed somewhere, for the retry budget.
pub struct Failed(pub Outcome);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.failure_text())
    }
}

impl Transient for Failed {
    /// Outages (identity endpoint, 429/5xx, timeouts, the deadline) are
    /// retried; a failing hook is not: retrying would only delay the boot.
    fn is_transient(&self) -> bool {
        self.0
            .failures
            .iter()
            .all(|e| e.is_transient() && e.kind() != FailureKind::Hook)
    }
}

/// Rounds with `options` until one succeeds, a failure is not transient,
/// `wait` is spent (`None`: one round) or `stop` turns true (a round is
/// then abandoned before its first write). Returns the last outcome and
/// the number of attempts.
pub async fn budgeted(
    engine: &Engine,
    options: RoundOptions,
    wait: Option<Duration>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Result<Outcome, Failed>, u32) {
    // Kept across attempts: a failed hook is retried with the next one.
    let state = tokio::sync::Mutex::new(RoundState::default());
    let out = retry::with_budget(wait, Backoff::default(), stop.clone(), || {
        let (state, mut stop) = (&state, stop.clone());
        async move {
            let mut state = state.lock().await;
            let outcome = engine.round(&mut state, options, &mut stop).await;
            if outcome.ok() {
                Ok(outcome)
            } else {
                Err(Failed(outcome))
            }
        }
    })
    .await;
    (out.result, out.attempts)
}

/// Run the round and report.
pub async fn run(engine: &Engine, options: Options) -> Result<(), AppError> {
    let mut round = RoundOptions::once(options.dry_run);
    if options.keep_going {
        round.policy = Policy::PerGroup;
    }
    // `once` installs no signal handler (a signal ends it): never stopped.
    let (_never, stop) = tokio::sync::watch::channel(false);
    let (result, attempts) = budgeted(engine, round, options.wait, stop).await;
    match result {
        Ok(outcome) => {
            if options.dry_run {
                print_plan(&outcome);
            } else {
                tracing::info!(
                    files = outcome.files.len(),
                    changed = outcome.changed().count(),
                    hooks = outcome.hooks_run.len(),
                    "sync complete"
                );
            }
            Ok(())
        }
        Err(Failed(outcome)) => {
            let mut text = outcome.failure_text();
            if options.wait.is_some() && attempts > 1 {
                text.push_str(&format!("\n(gave up after {attempts} attempts)"));
            }
            if options.keep_going {
                tracing::error!(
                    changed = outcome.changed().count(),
                    failures = outcome.failures.len(),
                    "sync failed in part: the other hook groups were written; failed ones keep their last good files"
                );
                text.push_str("\n(--keep-going: the other hook groups were written)");
            } else {
                tracing::error!("sync failed, no file was left half-written");
            }
            Err(AppError::Sync(text))
        }
    }
}

/// `--dry-run` output: one line per file, never a value.
fn print_plan(outcome: &Outcome) {
    let mut out = std::io::stdout().lock();
    for file in &outcome.files {
        let verb = match file.change {
            Change::Created => "would create",
            Change::Updated => "would change",
            Change::Metadata => "would fix mode/owner of",
            Change::Unchanged => "unchanged",
        };
        let _ = writeln!(out, "{verb}: {}", file.path.display());
    }
    for store in &outcome.stores {
        for line in store.plan_lines() {
            let _ = writeln!(out, "{line}");
        }
    }
}
