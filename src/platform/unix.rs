//! Unix (Linux) side of [`crate::platform`]: signals, `sh -c` hooks in their
//! own process group, user/group lookup, systemd notification socket,
//! default paths.

use std::path::PathBuf;

use tokio::sync::{mpsc, watch};

use crate::agent::Triggers;
use crate::env::Env;

/// Default config file (SPEC.md "Command line").
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kvsync/kvsync.toml";
/// Where the Arc agent's HIMDS binary lives (PROTOCOL.md §1).
pub const ARC_AGENT_BINARY: &str = "/opt/azcmagent/bin/himds";
/// The Arc agent's token directory (PROTOCOL.md §1).
pub const ARC_TOKEN_DIR: &str = "/var/opt/azcmagent/tokens";
/// What to do about "permission denied" on the Arc challenge file.
pub const ARC_PERMISSION_HINT: &str =
    "run kvsync as root or add its service user to the `himds` group";

/// The default config path.
pub fn default_config_path(_env: &Env) -> PathBuf {
    PathBuf::from(DEFAULT_CONFIG_PATH)
}

/// The path whose existence means "the Arc agent is installed".
pub fn arc_agent_binary(_env: &Env) -> PathBuf {
    PathBuf::from(ARC_AGENT_BINARY)
}

/// The directory an Arc challenge file must lie directly in.
pub fn arc_token_dir(_env: &Env) -> Result<PathBuf, String> {
    Ok(PathBuf::from(ARC_TOKEN_DIR))
}

impl crate::write::Target {
    /// Where and how a configured file is written.
    pub fn from_spec(spec: &crate::config::FileSpec) -> Self {
        crate::write::Target {
            path: spec.path.clone(),
            mode: spec.mode,
            uid: spec.owner,
            gid: spec.group,
            dir_mode: spec.dir_mode,
            follow_symlinks: spec.follow_symlinks,
        }
    }
}

/// SIGHUP → reload; SIGTERM/SIGINT → stop (signal-hook).
pub fn signal_triggers() -> std::io::Result<Triggers> {
    use futures::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let (reload_tx, reload) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            if signal == SIGHUP {
                let _ = reload_tx.send(());
            } else {
                let _ = stop_tx.send(true);
            }
        }
    });
    Ok(Triggers { reload, stop })
}

/// Looks up a user name in the host's user database (`getpwnam`).
pub fn lookup_user(name: &str) -> Result<u32, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!(
            "no user named \"{name}\" on this host (give a numeric uid to skip the lookup)"
        )),
        Err(e) => Err(format!("looking up user \"{name}\" failed: {e}")),
    }
}

/// Looks up a group name in the host's group database (`getgrnam`).
pub fn lookup_group(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "no group named \"{name}\" on this host (give a numeric gid to skip the lookup)"
        )),
        Err(e) => Err(format!("looking up group \"{name}\" failed: {e}")),
    }
}

/// `CLOCK_MONOTONIC` in microseconds (sd_notify's `MONOTONIC_USEC`).
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// systemd's notification socket (`$NOTIFY_SOCKET`).
pub struct NotifySocket {
    sock: std::os::unix::net::UnixDatagram,
    path: String,
}

impl NotifySocket {
    pub fn new(path: &str) -> Option<Self> {
        std::os::unix::net::UnixDatagram::unbound()
            .ok()
            .map(|sock| Self {
                sock,
                path: path.to_owned(),
            })
    }

    /// Send one datagram (`@name` = Linux abstract socket).
    pub fn send(&self, message: &str) -> std::io::Result<()> {
        if let Some(name) = self.path.strip_prefix('@') {
            send_abstract(&self.sock, name, message)
        } else {
            self.sock
                .send_to(message.as_bytes(), &self.path)
                .map(|_| ())
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(
    sock: &std::os::unix::net::UnixDatagram,
    name: &str,
    message: &str,
) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    sock.send_to_addr(message.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &std::os::unix::net::UnixDatagram, _: &str, _: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("abstract sockets are Linux-only"))
}

/// The command running a string hook: `sh -c COMMAND`.
pub fn shell_command(command: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(command);
    c
}

/// Put a hook in its own process group (so a timeout kills everything it
/// started).
pub fn isolate_hook(cmd: &mut tokio::process::Command) {
    cmd.process_group(0);
}

/// Kills a hook and everything it started: its process group.
pub struct HookGuard {
    pgid: Option<i32>,
}

impl HookGuard {
    /// Call right after spawning a command prepared with [`isolate_hook`].
    pub fn attach(child: &tokio::process::Child) -> std::io::Result<Self> {
        Ok(Self {
            pgid: child.id().and_then(|p| i32::try_from(p).ok()),
        })
    }

    /// `SIGKILL` the whole group (the group id equals the shell's pid).
    pub fn kill(&self) {
        let Some(pid) = self.pgid else {
            return;
        };
        if let Err(e) = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            tracing::warn!(pgid = pid, error = %e, "could not kill the hook's process group");
        }
    }
}

/// `kvsync service …` is the Windows service manager's; on Unix systemd
/// runs `kvsync run` (deploy/systemd).
fn no_service() -> u8 {
    eprintln!(
        "kvsync: `service` manages the Windows service; on this platform install deploy/systemd/kvsync.service and use systemctl"
    );
    crate::app::EXIT_USAGE
}

/// Windows only: prints how to run kvsync under systemd, exit 2.
pub fn service_install(_config: Option<&std::path::Path>, _env: &Env) -> u8 {
    no_service()
}

/// Windows only: prints how to run kvsync under systemd, exit 2.
pub fn service_uninstall() -> u8 {
    no_service()
}

/// Windows only: prints how to run kvsync under systemd, exit 2.
pub fn service_run(
    _config: &std::path::Path,
    _env: &Env,
    _format: Option<crate::config::LogFormat>,
) -> u8 {
    no_service()
}

/// Variables of the system a hook needs beyond `hooks::HOOK_ENV_KEPT`:
/// none on Unix.
pub const HOOK_ENV_SYSTEM: &[&str] = &[];
/// `[[store]]` is the Windows certificate store; the config already
/// rejects it here, so this is reached only by a config built in code.
pub fn store_sync(
    spec: &crate::config::StoreSpec,
    _material: &crate::certs::CertMaterial,
    _dry_run: bool,
) -> Result<crate::store::StoreReport, String> {
    Err(format!(
        "{}: [[store]] needs Windows (the certificate store); use [[file]] here",
        spec.label()
    ))
}
