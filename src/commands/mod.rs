//! The subcommands: thin wrappers over the pipeline that turn results into
//! exit codes (SPEC.md: 0 success, 1 sync failed, 2 bad usage or config).

pub mod check;
pub mod once;
pub mod whoami;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::env::Env;
use crate::identity::cache::TokenCache;
use crate::render::Renderer;
use crate::sync::Engine;
use crate::vault::VaultClient;

pub const EXIT_OK: u8 = 0;
pub const EXIT_SYNC_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// `-c`, else `KVSYNC_CONFIG`, else the platform default.
pub fn config_path(explicit: Option<&Path>, env: &Env) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = env.var("KVSYNC_CONFIG") {
        return PathBuf::from(p);
    }
    PathBuf::from(crate::config::DEFAULT_CONFIG_PATH)
}

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// Why a command could not even start a round.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Invalid config or template (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// Environment problem: TLS setup, identity selection (exit 1).
    #[error("{0}")]
    Environment(String),
}

impl SetupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SetupError::Invalid(_) => EXIT_USAGE,
            SetupError::Environment(_) => EXIT_SYNC_FAILED,
        }
    }
}

/// Load and check a config file and compile its templates.
pub fn load(path: &Path) -> Result<(Config, Renderer), SetupError> {
    let config = crate::config::load(path).map_err(|e| SetupError::Invalid(e.to_string()))?;
    let renderer = Renderer::compile(&config).map_err(|errors| {
        SetupError::Invalid(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    Ok((config, renderer))
}

/// Everything a round needs besides the config: HTTP clients, the identity
/// source and its token cache, the vault client.
pub fn vault_client(config: &Config, env: &Env) -> Result<Arc<VaultClient>, SetupError> {
    let env_err = |e: &dyn std::fmt::Display| SetupError::Environment(e.to_string());
    let metadata_http = crate::http::metadata_client().map_err(|e| env_err(&e))?;
    let remote_http =
        crate::http::vault_client(env, config.tls.ca_file.as_deref()).map_err(|e| env_err(&e))?;
    let source = crate::identity::select(&config.auth, env, metadata_http, remote_http.clone())
        .map_err(|e| env_err(&e))?;
    let tokens = Arc::new(TokenCache::new(source));
    Ok(Arc::new(
        VaultClient::new(remote_http, tokens, config.auth.audience.clone())
            .with_audience_hosts(config.auth.audience_hosts.clone()),
    ))
}

/// Config + templates + clients → a ready [`Engine`].
pub fn engine(path: &Path, env: &Env) -> Result<Engine, SetupError> {
    let (config, renderer) = load(path)?;
    let vault = vault_client(&config, env)?;
    Ok(Engine::new(config, renderer, vault))
}

/// Build the engine for `path` and start logging (CLI format, else the
/// config's, else text). On failure the message is printed and the exit
/// code returned.
pub fn start(
    path: &Path,
    env: &Env,
    cli_format: Option<crate::config::LogFormat>,
) -> Result<Engine, u8> {
    let engine = engine(path, env).map_err(|e| {
        eprintln!("kvsync: {e}");
        e.exit_code()
    })?;
    let format = cli_format
        .or(engine.config().agent.log_format)
        .unwrap_or(crate::config::LogFormat::Text);
    crate::logging::init(format, env);
    Ok(engine)
}
