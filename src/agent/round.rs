//! One round of the long-running agent: [`Engine::round`] with the
//! per-hook-group policy, its outcome exported as metrics. Failed hooks and
//! change detection live in the [`RoundState`] the agent keeps across
//! rounds and reloads.

use tokio::sync::watch;

use crate::sync::{Engine, Outcome, RoundOptions, RoundState, unix_now};

use super::metrics::Metrics;

/// Run a round of `kvsync run` and record it in `metrics`.
pub async fn run(
    engine: &Engine,
    state: &mut RoundState,
    metrics: &Metrics,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let outcome = engine.round(state, RoundOptions::agent(), stop).await;
    record(&outcome, metrics);
    outcome
}

fn record(outcome: &Outcome, metrics: &Metrics) {
    for failure in &outcome.failures {
        metrics.failure(failure.kind());
    }
    for (alias, not_after) in &outcome.certificates {
        metrics.certificate_expires(alias, *not_after);
    }
    for (alias, expires) in &outcome.secret_expiries {
        metrics.secret_expires(alias, *expires);
    }
    let now = unix_now() as f64;
    for file in &outcome.files {
        metrics.file_ok(&file.path.display().to_string(), now);
        if file.change.is_change() {
            metrics.files_written.inc();
        }
    }
    let hooks = outcome.hooks_run.len() + outcome.hooks_failed;
    metrics.hooks_run.inc_by(hooks as u64);
    metrics.hooks_failed.inc_by(outcome.hooks_failed as u64);
}
