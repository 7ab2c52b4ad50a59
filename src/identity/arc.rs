//! Azure Arc HIMDS token source (PROTOCOL.md §1): the two-GET challenge
//! flow. The challenge file is validated (directory, `.key`, regular file via
//! lstat, ≤ 4096 bytes) before it is opened.

use std::path::PathBuf;

use url::Url;

use super::{AccessToken, IdentityError, SourceInfo, TokenSource};
use crate::config::AuthConfig;
use crate::env::Env;

/// HIMDS api-version (PROTOCOL.md §1: "Use 2020-06-01").
pub const API_VERSION: &str = "2020-06-01";
/// Default HIMDS token endpoint when the agent is installed but the env
/// vars are missing (PROTOCOL.md §1).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";
/// The Arc agent's token directory.
#[cfg(unix)]
pub const TOKEN_DIR: &str = "/var/opt/azcmagent/tokens";
/// Largest challenge file we read (PROTOCOL.md §1, all SDKs agree).
pub const MAX_CHALLENGE_FILE_BYTES: u64 = 4096;

pub struct ArcSource {
    pub endpoint: Url,
    pub token_dir: PathBuf,
    http: reqwest::Client,
}

impl ArcSource {
    pub fn new(endpoint: Url, token_dir: PathBuf, http: reqwest::Client) -> Self {
        Self {
            endpoint,
            token_dir,
            http,
        }
    }

    /// Endpoint from config, else `IDENTITY_ENDPOINT`, else the default when
    /// the agent is installed.
    pub fn from_config(
        auth: &AuthConfig,
        env: &Env,
        http: reqwest::Client,
    ) -> Result<Self, IdentityError> {
        let _ = (auth, env, http);
        unimplemented!("ArcSource::from_config")
    }
}

#[async_trait::async_trait]
impl TokenSource for ArcSource {
    async fn fetch(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        let _ = (audience, &self.http, &self.token_dir);
        unimplemented!("ArcSource::fetch")
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "arc",
            endpoint: self.endpoint.to_string(),
        }
    }
}
