//! kvsync binary: parse the command line, call the command, map its result
//! to the exit code (one map: `kvsync::app::exit_code`).

use std::process::ExitCode;

use clap::Parser;
use kvsync::app::{self, AppError, with_runtime};
use kvsync::cli::{Cli, Command, LogFormatArg};
use kvsync::commands;
use kvsync::config::LogFormat;
use kvsync::env::Env;

fn main() -> ExitCode {
    // reqwest is built without a default crypto provider: install ring's
    // once for the process (our clients also pass it explicitly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let env = Env::from_process();
    let cli_format = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    app::exit(run(cli.command, &env, cli_format))
}

fn run(command: Command, env: &Env, cli_format: Option<LogFormat>) -> Result<(), AppError> {
    match command {
        Command::Check { config, online } => {
            let path = app::config_path(config.config.as_deref(), env);
            commands::check::run(&path)?;
            if !online {
                return Ok(());
            }
            with_runtime(|| async {
                let engine = app::start(&path, env, cli_format)?;
                commands::check::online(&engine).await
            })
        }
        Command::Once { config, dry_run } => {
            let path = app::config_path(config.config.as_deref(), env);
            with_runtime(|| async {
                let engine = app::start(&path, env, cli_format)?;
                commands::once::run(&engine, dry_run).await
            })
        }
        Command::Run { config } => {
            let path = app::config_path(config.config.as_deref(), env);
            with_runtime(|| async {
                let triggers = kvsync::agent::signal_triggers().map_err(|source| AppError::Io {
                    what: "cannot install signal handlers".to_owned(),
                    source,
                })?;
                let engine = app::start(&path, env, cli_format)?;
                kvsync::agent::run(&path, env, engine, triggers).await
            })
        }
        Command::Whoami { config, json } => {
            let path = app::config_path(config.config.as_deref(), env);
            with_runtime(|| async { commands::whoami::run(&path, env, cli_format, json).await })
        }
    }
}
