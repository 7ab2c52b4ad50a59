//! Single-flight, per-audience token cache (PROTOCOL.md §4). A token is
//! reused until [`REFRESH_MARGIN`] before expiry (half its lifetime for
//! tokens shorter than twice the margin); concurrent callers for one
//! audience wait for one in-flight fetch; a failed refresh keeps serving the
//! old token while it is still valid. Tokens live in memory only and are
//! never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;

use super::{AccessToken, IdentityError, TokenSource};

/// Refresh when this little validity remains (PROTOCOL.md §4: 5 minutes).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// After a failed refresh while the old token is still valid, wait this
/// long before trying again, so every caller does not pay a full retry
/// schedule (HIMDS: up to ~70 s) in turn.
pub const REFRESH_FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// The time source; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Default)]
struct Slot {
    token: Option<AccessToken>,
    /// When `token` was obtained (its lifetime decides the refresh point).
    fetched_at: Option<SystemTime>,
    /// No refresh attempt before this (after a failed one).
    retry_not_before: Option<SystemTime>,
}

impl Slot {
    /// When the cached token should be replaced.
    fn refresh_at(&self) -> Option<SystemTime> {
        let token = self.token.as_ref()?;
        let lifetime = token
            .expires_on
            .duration_since(self.fetched_at?)
            .unwrap_or(Duration::ZERO);
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        token.expires_on.checked_sub(margin)
    }
}

pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    slots: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    clock: Clock,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self::with_clock(source, Arc::new(SystemTime::now))
    }

    pub fn with_clock(source: Arc<dyn TokenSource>, clock: Clock) -> Self {
        Self {
            source,
            slots: tokio::sync::Mutex::new(HashMap::new()),
            clock,
        }
    }

    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }

    async fn slot(&self, audience: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().await;
        slots.entry(audience.to_owned()).or_default().clone()
    }

    /// A valid token for `audience`, from cache or freshly fetched.
    pub async fn get(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        let slot = self.slot(audience).await;
        // Holding the slot's lock across the fetch is the single flight:
        // concurrent callers queue here and then find the fresh token.
        let mut slot = slot.lock().await;
        let now = (self.clock)();
        let still_valid = slot.token.as_ref().filter(|t| t.expires_on > now).cloned();
        if let (Some(token), Some(refresh_at)) = (&still_valid, slot.refresh_at()) {
            let backing_off = slot.retry_not_before.is_some_and(|t| now < t);
            if now < refresh_at || backing_off {
                return Ok(token.clone());
            }
        }
        match self.source.fetch(audience).await {
            Ok(token) => {
                slot.token = Some(token.clone());
                slot.fetched_at = Some(now);
                slot.retry_not_before = None;
                Ok(token)
            }
            Err(err) => match still_valid {
                Some(old) => {
                    tracing::warn!(audience, error = %err, "token refresh failed; using the current token until it expires");
                    slot.retry_not_before = Some(now + REFRESH_FAILURE_BACKOFF);
                    Ok(old)
                }
                None => Err(err),
            },
        }
    }

    /// Expiry of each cached token, by audience (for metrics; a slot busy
    /// with a refresh is skipped rather than waited for).
    pub async fn expiries(&self) -> Vec<(String, SystemTime)> {
        let slots = self.slots.lock().await;
        slots
            .iter()
            .filter_map(|(audience, slot)| {
                let slot = slot.try_lock().ok()?;
                Some((audience.clone(), slot.token.as_ref()?.expires_on))
            })
            .collect()
    }

    /// Drop the cached token for `audience` (after a 401 from the vault).
    pub async fn invalidate(&self, audience: &str) {
        let slot = self.slot(audience).await;
        *slot.lock().await = Slot::default();
    }

    /// Drop the cached token for `audience` only if it is still `stale` (the
    /// one a vault rejected): when several requests see the same 401, the
    /// first one refreshes and the others reuse its new token.
    pub async fn invalidate_if(&self, audience: &str, stale: &AccessToken) {
        let slot = self.slot(audience).await;
        let mut slot = slot.lock().await;
        let same = slot
            .token
            .as_ref()
            .is_some_and(|t| t.token.expose_secret() == stale.token.expose_secret());
        if same {
            *slot = Slot::default();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::identity::SourceInfo;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fake {
        calls: AtomicUsize,
        lifetime: Duration,
        now: Arc<Mutex<SystemTime>>,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl TokenSource for Fake {
        async fn fetch(&self, _audience: &str) -> Result<AccessToken, IdentityError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(IdentityError::Other("down".into()));
            }
            Ok(AccessToken {
                token: format!("token-{n}").into(),
                expires_on: *self.now.lock().unwrap() + self.lifetime,
            })
        }
        fn info(&self) -> SourceInfo {
            SourceInfo {
                kind: "fake",
                endpoint: String::new(),
            }
        }
    }

    fn setup(lifetime: Duration) -> (Arc<Fake>, TokenCache, Arc<Mutex<SystemTime>>) {
        let now = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            lifetime,
            now: now.clone(),
            fail: false.into(),
        });
        let clock_now = now.clone();
        let cache =
            TokenCache::with_clock(fake.clone(), Arc::new(move || *clock_now.lock().unwrap()));
        (fake, cache, now)
    }

    fn advance(now: &Mutex<SystemTime>, secs: u64) {
        *now.lock().unwrap() += Duration::from_secs(secs);
    }

    fn secret(t: &AccessToken) -> String {
        t.token.expose_secret().to_owned()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let (fake, cache, _) = setup(Duration::from_secs(3600));
        let cache = Arc::new(cache);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.get("aud").await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(secret(&t.await.unwrap()), "token-1");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        cache.get("other").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refreshes_five_minutes_before_expiry() {
        let (fake, cache, now) = setup(Duration::from_secs(3600));
        cache.get("a").await.unwrap();
        advance(&now, 3600 - 301);
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-1");
        advance(&now, 2);
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-2");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_tokens_refresh_at_half_life() {
        let (_, cache, now) = setup(Duration::from_secs(120));
        cache.get("a").await.unwrap();
        advance(&now, 59);
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-1");
        advance(&now, 2);
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-2");
    }

    #[tokio::test]
    async fn failed_refresh_keeps_valid_token_then_fails_after_expiry() {
        let (fake, cache, now) = setup(Duration::from_secs(3600));
        cache.get("a").await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        advance(&now, 3400);
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-1");
        // Backing off: no new attempt within REFRESH_FAILURE_BACKOFF.
        let calls = fake.calls.load(Ordering::SeqCst);
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), calls);
        advance(&now, 300);
        assert!(cache.get("a").await.is_err());
    }

    #[tokio::test]
    async fn invalidate_forces_a_new_fetch() {
        let (_, cache, _) = setup(Duration::from_secs(3600));
        let t1 = cache.get("a").await.unwrap();
        cache.invalidate("a").await;
        let t2 = cache.get("a").await.unwrap();
        assert_eq!(secret(&t2), "token-2");
        // A stale token no longer cached does not evict the new one.
        cache.invalidate_if("a", &t1).await;
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-2");
        cache.invalidate_if("a", &t2).await;
        assert_eq!(secret(&cache.get("a").await.unwrap()), "token-3");
    }
}
