//! kvsync binary: parse the command line, set up logging, call the library.

use std::process::ExitCode;

use clap::Parser;
use kvsync::cli::{Cli, Command};
use kvsync::commands;
use kvsync::env::Env;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let code = match cli.command {
        Command::Check { config } => {
            commands::check::run(&commands::config_path(config.config.as_deref(), &env))
        }
        _ => {
            eprintln!("not implemented yet");
            commands::EXIT_USAGE
        }
    };
    commands::exit(code)
}
