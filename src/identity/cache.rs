//! Single-flight, per-audience token cache. A token is reused until
//! [`REFRESH_MARGIN`] before expiry; concurrent callers wait for one
//! in-flight refresh (PROTOCOL.md §4).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{AccessToken, IdentityError, TokenSource};

/// Refresh when this little validity remains (PROTOCOL.md §4: 5 minutes).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    slots: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<AccessToken>>>>>,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self {
            source,
            slots: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }

    /// A valid token for `audience`, from cache or freshly fetched.
    pub async fn get(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        let _ = audience;
        unimplemented!("TokenCache::get")
    }

    /// Drop the cached token for `audience` (after a 401 from the vault).
    pub async fn invalidate(&self, audience: &str) {
        let _ = audience;
        unimplemented!("TokenCache::invalidate")
    }
}
