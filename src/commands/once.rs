//! `kvsync once`: one sync round, then exit. All or nothing by default;
//! `--keep-going` isolates hook groups as `run` does; `--wait` retries
//! transient failures within a budget ([`crate::sync::retry`]).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::metrics::Metrics;
use crate::agent::round::{self, PendingHooks, RoundOutcome};
use crate::commands::{EXIT_OK, EXIT_SYNC_FAILED};
use crate::sync::retry::{self, Backoff, Transient};
use crate::sync::{Engine, RoundOptions};
use crate::write::Change;

/// How `once` runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub dry_run: bool,
    pub keep_going: bool,
    /// Retry budget for transient failures.
    pub wait: Option<Duration>,
}

/// Run one round and report; returns the exit code.
pub async fn run(engine: &Engine, options: Options) -> u8 {
    if options.keep_going && !options.dry_run {
        return keep_going(engine, options.wait).await;
    }
    let dry_run = options.dry_run;
    let out = retry::with_budget(options.wait, Backoff::default(), || {
        engine.once(RoundOptions { dry_run })
    })
    .await;
    match out.result {
        Ok(report) => {
            if dry_run {
                print_plan(&report);
            } else {
                let changed = report.changed().count();
                tracing::info!(
                    files = report.files.len(),
                    changed,
                    hooks = report.hooks_run.len(),
                    "sync complete"
                );
            }
            EXIT_OK
        }
        Err(e) => {
            tracing::error!("sync failed, no file was left half-written");
            eprintln!(
                "kvsync: sync failed{}:\n{e}\n({})",
                attempts_note(options.wait, out.attempts),
                crate::TROUBLESHOOTING
            );
            EXIT_SYNC_FAILED
        }
    }
}

fn attempts_note(wait: Option<Duration>, attempts: u32) -> String {
    match wait {
        Some(_) if attempts > 1 => format!(" after {attempts} attempts"),
        _ => String::new(),
    }
}

/// A keep-going round that failed somewhere, for the retry budget.
struct Failed(RoundOutcome);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.state_key())
    }
}

impl Transient for Failed {
    fn is_transient(&self) -> bool {
        self.0.transient
    }
}

/// `--keep-going`: the agent's per-group round, once (retried within the
/// budget while every failure is transient; hooks that failed stay pending
/// across attempts).
async fn keep_going(engine: &Engine, wait: Option<Duration>) -> u8 {
    let pending = Arc::new(tokio::sync::Mutex::new(PendingHooks::default()));
    let metrics = Arc::new(Metrics::new());
    // `once` installs no signal handler: nothing ever asks it to stop.
    let (_never, stop) = tokio::sync::watch::channel(false);
    let out = retry::with_budget(wait, Backoff::default(), || {
        let (pending, metrics, mut stop) = (pending.clone(), metrics.clone(), stop.clone());
        async move {
            let mut pending = pending.lock().await;
            let outcome = round::run(engine, &mut pending, &metrics, &mut stop).await;
            if outcome.ok() {
                Ok(outcome)
            } else {
                Err(Failed(outcome))
            }
        }
    })
    .await;
    match out.result {
        Ok(outcome) => {
            tracing::info!(
                changed = outcome.files_written,
                hooks = outcome.hooks_run,
                "sync complete"
            );
            EXIT_OK
        }
        Err(Failed(outcome)) => {
            tracing::error!(
                changed = outcome.files_written,
                failures = outcome.failures.len(),
                "sync partly failed: the other groups were written; failed groups keep their last good files"
            );
            let mut lines = String::new();
            for (kind, message) in &outcome.failures {
                lines.push_str(&format!("{kind}: {message}\n"));
            }
            eprintln!(
                "kvsync: sync failed for part of the files{} (--keep-going: the rest was written):\n{lines}({})",
                attempts_note(wait, out.attempts),
                crate::TROUBLESHOOTING
            );
            EXIT_SYNC_FAILED
        }
    }
}

/// `--dry-run` output: one line per file, never a value.
fn print_plan(report: &crate::sync::RoundReport) {
    let mut out = std::io::stdout().lock();
    for file in &report.files {
        let verb = match file.change {
            Change::Created => "would create",
            Change::Updated => "would change",
            Change::Metadata => "would fix mode/owner of",
            Change::Unchanged => "unchanged",
        };
        let _ = writeln!(out, "{verb}: {}", file.path.display());
    }
}
