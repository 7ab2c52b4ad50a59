//! kvsync binary: parse the command line, set up logging, call the library,
//! map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;
use kvsync::cli::{Cli, Command, LogFormatArg};
use kvsync::commands::{self, EXIT_SYNC_FAILED};
use kvsync::config::LogFormat;
use kvsync::env::Env;

fn main() -> ExitCode {
    // Before anything holds a secret: no core dumps, no same-user ptrace.
    kvsync::hardening::no_core_dumps();
    // reqwest is built without a default crypto provider: install ring's
    // once for the process (our clients also pass it explicitly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let env = Env::from_process();
    let cli_format = cli.log_format.map(|f| match f {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    let code = match cli.command {
        Command::Check { config, online } => {
            let path = commands::config_path(config.config.as_deref(), &env);
            let code = commands::check::run(&path);
            if code != commands::EXIT_OK || !online {
                code
            } else {
                with_runtime(|| async {
                    match commands::start(&path, &env, cli_format) {
                        Ok(engine) => commands::check::online(&engine).await,
                        Err(code) => code,
                    }
                })
            }
        }
        Command::Once { config, dry_run } => {
            let path = commands::config_path(config.config.as_deref(), &env);
            with_runtime(|| async {
                let engine = match commands::start(&path, &env, cli_format) {
                    Ok(engine) => engine,
                    Err(code) => return code,
                };
                commands::once::run(&engine, dry_run).await
            })
        }
        Command::Run { config } => {
            let path = commands::config_path(config.config.as_deref(), &env);
            with_runtime(|| async {
                let triggers = match kvsync::agent::signal_triggers() {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("kvsync: cannot install signal handlers: {e}");
                        return EXIT_SYNC_FAILED;
                    }
                };
                let engine = match commands::start(&path, &env, cli_format) {
                    Ok(engine) => engine,
                    Err(code) => return code,
                };
                kvsync::agent::run(&path, &env, engine, triggers).await
            })
        }
        Command::Whoami { config, json } => {
            let path = commands::config_path(config.config.as_deref(), &env);
            with_runtime(|| async { commands::whoami::run(&path, &env, json).await })
        }
    };
    commands::exit(code)
}

fn with_runtime<F, Fut>(f: F) -> u8
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("kvsync: cannot start the async runtime: {e}");
            EXIT_SYNC_FAILED
        }
    }
}
