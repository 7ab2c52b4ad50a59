//! Command-line definitions (clap). Also used to generate the man page and
//! shell completions.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kvsync",
    version,
    about = "Keep files in step with Azure Key Vault secrets and certificates, using the host's managed identity",
    long_about = None
)]
pub struct Cli {
    /// Log format on stderr (overrides `[agent] log_format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file [default: $KVSYNC_CONFIG, else /etc/kvsync/kvsync.toml;
    /// on Windows %ProgramData%\kvsync\kvsync.toml]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Daemon: sync now, then keep in sync (schedule, SIGHUP, config edits)
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Windows: started by the service control manager (what `service
        /// install` registers); not for use from a console
        #[arg(long, hide = true)]
        service: bool,
    },
    /// One sync round, then exit
    Once {
        #[command(flatten)]
        config: ConfigArg,
        /// Fetch and render, write nothing, run no hook; print what would change
        #[arg(long)]
        dry_run: bool,
        /// Isolate hook groups as `run` does: write and hook what can be,
        /// keep the last good files of what failed; exit 1 listing the
        /// failures (default: all or nothing) [also: `[agent] keep_going`]
        #[arg(long)]
        keep_going: bool,
        /// Retry transient failures (identity endpoint not up, 429, 5xx,
        /// timeouts) for up to DURATION, e.g. `5m`; 403, 404 and template
        /// errors fail at once [also: `[agent] once_wait`]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        wait: Option<Duration>,
    },
    /// Run COMMAND with secrets in its environment (`[env]`); keep syncing
    /// like `run`, restarting or signalling it when a value or file changes
    Exec {
        #[command(flatten)]
        config: ConfigArg,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Validate config and templates offline
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// After the offline checks, authenticate and fetch every secret
        /// (values are never printed): report versions, expiry dates and,
        /// per certificate, subject, SANs, thumbprint and notAfter
        #[arg(long)]
        online: bool,
    },
    /// Windows: register or remove the `kvsync` service
    #[command(hide = !cfg!(windows))]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Show the identity in use, token claims and instance metadata (never the token)
    Whoami {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Register `kvsync run` with the service control manager (automatic
    /// delayed start, restart on failure, Event Log source); not started
    Install {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stop and remove the service and its Event Log source
    Uninstall,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as \"30s\" or \"5m\" ({e})"))
}
