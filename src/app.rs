//! Setup shared by every command and by the agent's reload: config path,
//! config and templates, logging, the HTTP clients, the identity source and
//! its token cache, the vault client. Also the one place that turns an
//! error into an exit code ([`exit_code`]) and prints it ([`exit`]: one
//! message prefix, `kvsync: `; config diagnostics keep their
//! `file:line:column:` form).
//!
//! Exit codes (SPEC.md): 0 success, 1 sync failed (or the environment is
//! unusable: TLS setup, identity, signals, listen address), 2 bad usage,
//! config or template.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Cli, Command, LogFormatArg, ServiceAction};
use crate::commands;
use crate::config::{Config, ConfigError, LogFormat};
use crate::env::Env;
use crate::http::HttpSetupError;
use crate::identity::IdentityError;
use crate::identity::cache::TokenCache;
use crate::render::{RenderError, Renderer};
use crate::sync::Engine;
use crate::vault::VaultClient;

pub const EXIT_OK: u8 = 0;
pub const EXIT_SYNC_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// The one prefix of every message kvsync prints on failure.
pub const PREFIX: &str = "kvsync: ";

/// Why a command failed. [`exit_code`] maps each to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config file is missing or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A template does not compile (one line per error).
    #[error("{}", join_lines(.0))]
    Templates(Vec<RenderError>),
    /// The HTTP clients could not be built (CA file, proxy, TLS).
    #[error("{0}")]
    Http(#[from] HttpSetupError),
    /// No identity source is usable.
    #[error("no usable identity: {0}")]
    Identity(#[from] IdentityError),
    /// A round failed (one line per failure).
    #[error("sync failed:\n{0}\n({ts})", ts = crate::TROUBLESHOOTING)]
    Sync(String),
    /// `check --online` found failures (already listed, one per line).
    #[error("{0}\n({ts})", ts = crate::TROUBLESHOOTING)]
    Check(String),
    /// `kvsync exec`: the command ended with this non-zero status (its
    /// exit code, 128 + signal number if a signal killed it, 126/127 if it
    /// could not be started). Its own output said why; kvsync adds nothing.
    #[error("the command exited with status {0}")]
    Child(u8),
    /// The async runtime, signal handlers or the listen address.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn join_lines<E: std::fmt::Display>(errors: &[E]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one error → exit-code map.
pub fn exit_code(error: &AppError) -> u8 {
    match error {
        AppError::Child(code) => *code,
        AppError::Config(_) | AppError::Templates(_) => EXIT_USAGE,
        AppError::Http(_)
        | AppError::Identity(_)
        | AppError::Sync(_)
        | AppError::Check(_)
        | AppError::Io { .. } => EXIT_SYNC_FAILED,
    }
}

/// A command's result as the process exit code; a failure is printed once,
/// on stderr: with the one prefix, except config and template diagnostics,
/// whose every line starts with `file:line:column:` (docs/CONFIG.md, the
/// form editors and CI annotate).
pub fn exit(result: Result<(), AppError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            match e {
                AppError::Child(_) => {}
                AppError::Config(_) | AppError::Templates(_) => eprintln!("{e}"),
                _ => eprintln!("{PREFIX}{e}"),
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Run the command `cli` names.
pub fn run(cli: Cli, env: &Env) -> Result<(), AppError> {
    let cli_format = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    match cli.command {
        Command::Check { config, online } => {
            let path = config_path(config.config.as_deref(), env);
            commands::check::run(&path)?;
            if !online {
                return Ok(());
            }
            with_runtime(|| async {
                let engine = start(&path, env, cli_format)?;
                commands::check::online(&engine).await
            })
        }
        Command::Once {
            config,
            dry_run,
            keep_going,
            wait,
        } => {
            let path = config_path(config.config.as_deref(), env);
            with_runtime(|| async {
                let engine = start(&path, env, cli_format)?;
                let options = commands::once::Options {
                    dry_run,
                    keep_going: keep_going || engine.config().agent.keep_going,
                    wait: wait.or(engine.config().agent.once_wait),
                };
                commands::once::run(&engine, options).await
            })
        }
        Command::Exec { config, command } => {
            let path = config_path(config.config.as_deref(), env);
            with_runtime(|| async {
                let (triggers, stop) =
                    crate::exec::signals::triggers().map_err(|source| AppError::Io {
                        what: "cannot install signal handlers".to_owned(),
                        source,
                    })?;
                let engine = start(&path, env, cli_format)?;
                commands::exec::run(&path, env, engine, triggers, stop, command).await
            })
        }
        Command::Run {
            config,
            service: true,
        } => {
            let path = config_path(config.config.as_deref(), env);
            platform_code(crate::platform::service_run(&path, env, cli_format))
        }
        Command::Service { action } => platform_code(match action {
            ServiceAction::Install { config } => {
                crate::platform::service_install(config.config.as_deref(), env)
            }
            ServiceAction::Uninstall => crate::platform::service_uninstall(),
        }),
        Command::Run { config, .. } => {
            let path = config_path(config.config.as_deref(), env);
            with_runtime(|| async {
                let triggers = crate::agent::signal_triggers().map_err(|source| AppError::Io {
                    what: "cannot install signal handlers".to_owned(),
                    source,
                })?;
                let engine = start(&path, env, cli_format)?;
                crate::agent::run(&path, env, engine, triggers).await
            })
        }
        Command::Whoami { config, json } => {
            let path = config_path(config.config.as_deref(), env);
            with_runtime(|| async { commands::whoami::run(&path, env, cli_format, json).await })
        }
    }
}

/// `-c`, else `KVSYNC_CONFIG`, else the platform default.
pub(crate) fn config_path(explicit: Option<&Path>, env: &Env) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = env.var("KVSYNC_CONFIG") {
        return PathBuf::from(p);
    }
    crate::platform::default_config_path(env)
}

/// The exit code of a platform command (the Windows service's, which has
/// printed or logged its own messages) as a result.
fn platform_code(code: u8) -> Result<(), AppError> {
    match code {
        EXIT_OK => Ok(()),
        // Already reported: exit with the code, print nothing more.
        other => Err(AppError::Child(other)),
    }
}

/// Load and check a config file.
pub(crate) fn load_config(path: &Path) -> Result<Config, AppError> {
    Ok(crate::config::load(path)?)
}

/// Load and check a config file and compile its templates.
pub(crate) fn load(path: &Path) -> Result<(Config, Renderer), AppError> {
    let config = load_config(path)?;
    let renderer = Renderer::compile(&config).map_err(AppError::Templates)?;
    Ok((config, renderer))
}

/// Start logging: the CLI's format, else the config's, else text.
pub(crate) fn init_logging(config: &Config, cli_format: Option<LogFormat>, env: &Env) {
    let format = cli_format
        .or(config.agent.log_format)
        .unwrap_or(LogFormat::Text);
    crate::logging::init(format, env);
}

/// HTTP clients, the identity source and its token cache, the vault client.
pub(crate) fn vault_client(config: &Config, env: &Env) -> Result<Arc<VaultClient>, AppError> {
    let metadata_http = crate::http::metadata_client()?;
    let remote_http = crate::http::vault_client(env, config.tls.ca_file.as_deref())?;
    let source = crate::identity::select(&config.auth, env, metadata_http, remote_http.clone())?;
    let tokens = Arc::new(TokenCache::new(source));
    Ok(Arc::new(
        VaultClient::new(remote_http, tokens, config.auth.audience.clone())
            .with_audience_hosts(config.auth.audience_hosts.clone()),
    ))
}

/// Config + templates + clients → a ready [`Engine`] (the agent's reload
/// passes the vault client to keep, when identity and TLS are unchanged).
pub(crate) fn engine(
    path: &Path,
    env: &Env,
    keep: Option<(&Config, &Arc<VaultClient>)>,
) -> Result<Engine, AppError> {
    let (config, renderer) = load(path)?;
    let vault = match keep {
        Some((old, vault)) if same_client(old, &config) => vault.clone(),
        _ => vault_client(&config, env)?,
    };
    Ok(Engine::new(config, renderer, vault))
}

/// Whether two configs need the same vault client (identity and TLS).
fn same_client(a: &Config, b: &Config) -> bool {
    format!("{:?}{:?}", a.auth, a.tls) == format!("{:?}{:?}", b.auth, b.tls)
}

/// Load config and templates, start logging, then build the clients: a
/// ready [`Engine`] (identity selection is logged).
pub(crate) fn start(
    path: &Path,
    env: &Env,
    cli_format: Option<LogFormat>,
) -> Result<Engine, AppError> {
    let (config, renderer) = load(path)?;
    init_logging(&config, cli_format, env);
    let vault = vault_client(&config, env)?;
    Ok(Engine::new(config, renderer, vault))
}

/// Run `f` on a multi-threaded tokio runtime.
pub(crate) fn with_runtime<F, Fut>(f: F) -> Result<(), AppError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), AppError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| AppError::Io {
            what: "cannot start the async runtime".to_owned(),
            source,
        })?;
    rt.block_on(f())
}
