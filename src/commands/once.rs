//! `kvsync once`: one all-or-nothing sync round, then exit.

use std::io::Write;

use crate::commands::{EXIT_OK, EXIT_SYNC_FAILED};
use crate::sync::{Engine, Outcome, RoundOptions, RoundState};
use crate::write::Change;

/// Run one round and report; returns the exit code.
pub async fn run(engine: &Engine, dry_run: bool) -> u8 {
    let (_never, mut stop) = tokio::sync::watch::channel(false);
    let mut state = RoundState::default();
    let outcome = engine
        .round(&mut state, RoundOptions::once(dry_run), &mut stop)
        .await;
    if outcome.ok() {
        if dry_run {
            print_plan(&outcome);
        } else {
            tracing::info!(
                files = outcome.files.len(),
                changed = outcome.changed().count(),
                hooks = outcome.hooks_run.len(),
                "sync complete"
            );
        }
        EXIT_OK
    } else {
        tracing::error!("sync failed, no file was left half-written");
        eprintln!(
            "kvsync: sync failed:\n{}\n({})",
            outcome.failure_text(),
            crate::TROUBLESHOOTING
        );
        EXIT_SYNC_FAILED
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
