//! `kvsync-fake`: the emulator as a standalone process for the demo and the
//! benchmarks. `serve` starts HIMDS (with the admin API, see README.md) and
//! Key Vault, prints one ready line on stdout, and serves until SIGTERM or
//! SIGINT. Never prints secret values or tokens.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kvsync_fake::{Emulator, Options, Service};

#[derive(Debug, Parser)]
#[command(
    name = "kvsync-fake",
    version,
    about = "Local Azure emulator (Arc HIMDS + Key Vault) for kvsync"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HIMDS on http://127.0.0.1:<himds-port> and Key Vault on https://localhost:<vault-port>.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// HIMDS port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    himds_port: u16,
    /// Key Vault port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    vault_port: u16,
    /// Directory for ca.pem and tokens/ (created if missing).
    #[arg(long)]
    state_dir: PathBuf,
    /// Latency added to every Key Vault request, e.g. 20ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_kv: Option<Duration>,
    /// Latency added to every HIMDS request, e.g. 2ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_himds: Option<Duration>,
    /// Initial secret NAME=VALUE (repeatable).
    #[arg(long = "secret", value_parser = parse_secret)]
    secrets: Vec<(String, String)>,
    /// Audience the vault accepts.
    #[arg(long, default_value = kvsync_fake::DEFAULT_VAULT_AUDIENCE)]
    audience: String,
    /// Lifetime of issued tokens, e.g. 24h or 90s.
    #[arg(long, value_parser = humantime::parse_duration)]
    token_lifetime: Option<Duration>,
    /// Where challenge .key files are created [default: <state-dir>/tokens].
    #[arg(long)]
    token_dir: Option<PathBuf>,
    /// Name key files in challenges by this directory instead, e.g.
    /// 'C:\ProgramData\AzureConnectedMachineAgent\Tokens' with --token-dir
    /// "$WINEPREFIX/drive_c/ProgramData/AzureConnectedMachineAgent/Tokens"
    /// (a Windows kvsync under Wine).
    #[arg(long)]
    realm_dir: Option<String>,
}

fn parse_secret(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err("expected NAME=VALUE".to_owned()),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvsync-fake: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvsync-fake: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating state dir {}", args.state_dir.display()))?;
    let mut opts = Options {
        himds_port: args.himds_port,
        vault_port: args.vault_port,
        state_dir: Some(args.state_dir.clone()),
        vault_audience: args.audience,
        admin_api: true,
        token_dir: args.token_dir.clone(),
        realm_dir: args.realm_dir.clone(),
        ..Options::default()
    };
    if let Some(lifetime) = args.token_lifetime {
        opts.token_lifetime = lifetime;
    }
    let emu = Emulator::start(opts).await?;
    if let Some(d) = args.latency_kv {
        emu.set_latency(Service::KeyVault, d);
    }
    if let Some(d) = args.latency_himds {
        emu.set_latency(Service::Himds, d);
    }
    for (name, value) in &args.secrets {
        emu.set_secret(name, value);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "kvsync-fake ready himds={} vault={} ca={} tokens={}",
        emu.himds_base(),
        emu.vault_url(),
        emu.ca_file().display(),
        emu.token_dir().display()
    )?;
    out.flush()?;
    drop(out);
    wait_for_signal().await?;
    emu.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
