//! `kvsync once`: one all-or-nothing sync round, then exit.

use std::io::Write;

use crate::commands::{EXIT_OK, EXIT_SYNC_FAILED};
use crate::sync::{Engine, RoundOptions};
use crate::write::Change;

/// Run one round and report; returns the exit code.
pub async fn run(engine: &Engine, dry_run: bool) -> u8 {
    match engine.once(RoundOptions { dry_run }).await {
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
            eprintln!("kvsync: sync failed:\n{e}\n({})", crate::TROUBLESHOOTING);
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
