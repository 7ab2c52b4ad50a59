//! A retry budget for a boot-time round (`once --wait`, `[agent]
//! once_wait`, the first round of `exec`): transient failures (identity
//! endpoint not up or not ready, HIMDS/IMDS/Key Vault 429 and 5xx,
//! timeouts, DNS: see the `is_transient()` methods) are retried with capped
//! exponential backoff and jitter until the budget is spent; anything else
//! (403, 404, a template error) fails at once. One log line per state
//! change, not per attempt.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

/// First pause after a transient failure: HIMDS/IMDS usually come up within
/// seconds of boot, so start short.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// Longest pause between attempts: a budget of minutes still gets an
/// attempt every half minute once the identity endpoint is back.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Each pause is shortened by up to this fraction (random), so a fleet
/// that booted together does not retry in lockstep.
pub const JITTER_FRACTION: f64 = 0.2;

/// The pauses between attempts.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: FIRST_DELAY,
            max: MAX_DELAY,
        }
    }
}

/// A failure that may or may not be worth retrying.
pub trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for super::SyncError {
    fn is_transient(&self) -> bool {
        super::SyncError::is_transient(self)
    }
}

/// What a budgeted run ended with.
pub struct Budgeted<T, E> {
    pub result: Result<T, E>,
    pub attempts: u32,
}

/// Run `attempt` until it succeeds, fails for good, or `budget` is spent
/// (`None`: exactly one attempt), or `stop` turns true (no further attempt).
pub async fn with_budget<T, E, F, Fut>(
    budget: Option<Duration>,
    backoff: Backoff,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut attempt: F,
) -> Budgeted<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut delay = backoff.first;
    let mut last_state: Option<String> = None;
    let mut attempts = 0u32;
    // Bounded by the budget: every pass sleeps, and the loop ends once
    // the budget is spent.
    loop {
        attempts = attempts.saturating_add(1);
        let error = match attempt().await {
            Ok(v) => {
                if last_state.is_some() {
                    tracing::info!(attempts, "recovered: the round succeeded");
                }
                return Budgeted {
                    result: Ok(v),
                    attempts,
                };
            }
            Err(e) => e,
        };
        let left = budget.map(|b| b.saturating_sub(start.elapsed()));
        let stopping = *stop.borrow();
        let Some(left) = left.filter(|l| !l.is_zero() && error.is_transient() && !stopping) else {
            if budget.is_some() && error.is_transient() && !stopping {
                tracing::error!(attempts, "retry budget spent; giving up");
            }
            return Budgeted {
                result: Err(error),
                attempts,
            };
        };
        let state = error.to_string();
        if last_state.as_deref() != Some(state.as_str()) {
            tracing::warn!(
                budget_left = %humantime::format_duration(Duration::from_secs(left.as_secs())),
                "transient failure, retrying: {state}"
            );
        } else {
            tracing::debug!(attempts, "still failing");
        }
        last_state = Some(state);
        tokio::select! {
            () = tokio::time::sleep(jittered(delay).min(left)) => {}
            () = stopped(&mut stop) => {
                tracing::info!("stop requested; not retrying");
                return Budgeted { result: Err(error), attempts };
            }
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// Resolves when `stop` turns true; never when its sender is gone.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn jittered(d: Duration) -> Duration {
    let cut = rand::rng().random_range(0.0..=JITTER_FRACTION);
    d.mul_f64(1.0 - cut)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const FAST: Backoff = Backoff {
        first: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };

    fn never() -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        rx
    }

    #[tokio::test]
    async fn a_stop_request_ends_the_retries() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut n = 0;
        let out = with_budget(
            Some(Duration::from_secs(600)),
            Backoff::default(),
            rx,
            || {
                n += 1;
                if n == 2 {
                    let _ = tx.send(true);
                }
                async { Err::<(), _>(E(true)) }
            },
        )
        .await;
        assert!(out.result.is_err());
        assert_eq!(out.attempts, 2, "no attempt after the stop request");
    }

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e({})", self.0)
        }
    }
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let mut n = 0;
        let out = with_budget(Some(Duration::from_secs(60)), FAST, never(), || {
            n += 1;
            let r = if n < 4 { Err(E(true)) } else { Ok(n) };
            async move { r }
        })
        .await;
        assert_eq!(out.result.unwrap(), 4);
        assert_eq!(out.attempts, 4);
    }

    #[tokio::test]
    async fn permanent_failures_and_no_budget_stop_at_once() {
        let out = with_budget(Some(Duration::from_secs(60)), FAST, never(), || async {
            Err::<(), _>(E(false))
        })
        .await;
        assert_eq!(out.attempts, 1);
        let out = with_budget(None, FAST, never(), || async { Err::<(), _>(E(true)) }).await;
        assert_eq!(out.attempts, 1);
    }

    #[tokio::test]
    async fn the_budget_bounds_the_attempts() {
        let out = with_budget(Some(Duration::from_millis(100)), FAST, never(), || async {
            Err::<(), _>(E(true))
        })
        .await;
        assert!(out.result.is_err());
        // 1 + pauses of ≤10, ≤20, ≤40 ms and the rest of 100 ms: a handful.
        assert!((3..=8).contains(&out.attempts), "{}", out.attempts);
    }
}
