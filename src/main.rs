//! kvsync binary: parse the command line and hand it to the library
//! (`kvsync::app::run`); its result becomes the exit code through the one
//! map (`kvsync::app::exit_code`).

use std::process::ExitCode;

use clap::Parser;
use kvsync::app;
use kvsync::cli::Cli;
use kvsync::env::Env;

fn main() -> ExitCode {
    // Before anything holds a secret: no core dumps, no same-user ptrace.
    kvsync::hardening::no_core_dumps();
    // reqwest is built without a default crypto provider: install ring's
    // once for the process (our clients also pass it explicitly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let env = Env::from_process();
    app::exit(app::run(cli, &env))
}
