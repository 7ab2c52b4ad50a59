//! When the next round happens: every `interval` plus a random `jitter` when
//! healthy; capped exponential backoff with jitter after a transient failure
//! (cap ≤ interval, so an outage never delays recovery past one interval).

use std::time::Duration;

use rand::Rng;

/// First retry delay after a failed round.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Absolute cap on the backoff (further capped by the interval).
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
pub struct Schedule {
    pub interval: Duration,
    pub jitter: Duration,
    failures: u32,
}

impl Schedule {
    pub fn new(interval: Duration, jitter: Duration) -> Self {
        Self {
            interval,
            jitter,
            failures: 0,
        }
    }

    pub fn reconfigure(&mut self, interval: Duration, jitter: Duration) {
        self.interval = interval;
        self.jitter = jitter;
    }

    /// Delay before the next round after a successful one.
    pub fn after_success(&mut self) -> Duration {
        self.failures = 0;
        self.interval + random_up_to(self.jitter)
    }

    /// Delay before the next round after a failed one; at least
    /// `retry_after` when the service asked for it.
    pub fn after_failure(&mut self, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let cap = self.interval.min(BACKOFF_MAX).max(BACKOFF_BASE);
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.failures.min(16).saturating_sub(1));
        let ceiling = exp.min(cap);
        // "Equal jitter": half fixed, half random, so retries spread out but
        // never collapse to zero.
        let delay = ceiling / 2 + random_up_to(ceiling / 2);
        delay.max(retry_after.unwrap_or_default())
    }
}

fn random_up_to(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_waits_interval_plus_at_most_jitter() {
        let mut s = Schedule::new(Duration::from_secs(60), Duration::from_secs(10));
        for _ in 0..100 {
            let d = s.after_success();
            assert!(
                d >= Duration::from_secs(60) && d <= Duration::from_secs(70),
                "{d:?}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_is_capped_by_the_interval() {
        let mut s = Schedule::new(Duration::from_secs(20), Duration::ZERO);
        let delays: Vec<Duration> = (0..10).map(|_| s.after_failure(None)).collect();
        assert!(delays[0] <= Duration::from_secs(1));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)));
        assert!(delays[9] >= Duration::from_secs(10), "{delays:?}");
        s.after_success();
        assert!(s.after_failure(None) <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut s = Schedule::new(Duration::from_secs(60), Duration::ZERO);
        assert!(s.after_failure(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }
}
