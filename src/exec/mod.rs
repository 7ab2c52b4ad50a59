//! `kvsync exec -- COMMAND [ARGS…]`: run a command as kvsync's child with
//! the rendered `[env]` added to its environment, and keep syncing like
//! `run`. When an `[env]` value or a file changes, the child is restarted
//! (`on_change = "restart"`: stop signal, then a kill after `stop_timeout`)
//! or sent `[exec] signal` (`on_change = "signal"`, Unix). SIGTERM/SIGINT
//! to kvsync are forwarded; when the child exits, kvsync exits with its
//! status (128 + signal number if a signal killed it).
//!
//! Invariants:
//! * `[env]` values go only into the child's environment block at spawn:
//!   never into kvsync's own environment, a log line or an error. Between
//!   rounds only a digest of them is kept, to tell whether they changed.
//! * stdin, stdout and stderr are the child's (inherited).
//! * every wait for the child is bounded by `stop_timeout`, then a kill.
//!
//! Platform code (signals) lives in [`signals`].

pub mod signals;

use std::ffi::OsString;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::config::{ExecConfig, OnChange};

pub use signals::StopSignal;

/// Variables of kvsync's own environment that must not leak to the child:
/// systemd's notification socket belongs to kvsync (the child would
/// otherwise report readiness in kvsync's name).
const NOT_INHERITED: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The rendered `[env]`: (name, value) in config order.
pub type EnvValues = Vec<(String, SecretString)>;

/// The command line after `--`.
#[derive(Clone, Debug)]
pub struct ExecCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Runs and supervises the child.
pub struct Supervisor {
    command: ExecCommand,
    settings: ExecConfig,
    child: Option<Child>,
    /// The child leads its own process group: signals go to the group.
    group: bool,
    /// SHA-256 over the env the running child got (never the values).
    env_digest: Option<[u8; 32]>,
    stop_signal: StopSignal,
}

/// Digest of an env: names and values, length-prefixed.
fn digest(env: &[(String, SecretString)]) -> [u8; 32] {
    let mut h = Sha256::new();
    for (name, value) in env {
        for part in [name.as_bytes(), value.expose_secret().as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    h.finalize().into()
}

impl Supervisor {
    pub fn new(command: ExecCommand, settings: ExecConfig, stop_signal: StopSignal) -> Self {
        Self {
            command,
            settings,
            child: None,
            group: false,
            env_digest: None,
            stop_signal,
        }
    }

    /// New `[exec]` settings after a config reload.
    pub fn set_settings(&mut self, settings: ExecConfig) {
        self.settings = settings;
    }

    /// Start the child with `env` added to kvsync's environment.
    pub fn start(&mut self, env: &EnvValues) -> std::io::Result<()> {
        let mut cmd = Command::new(&self.command.program);
        cmd.args(&self.command.args);
        for name in NOT_INHERITED {
            cmd.env_remove(name);
        }
        for (name, value) in env {
            cmd.env(name, value.expose_secret());
        }
        let group = signals::configure(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot start {}: {e}",
                    self.command.program.to_string_lossy()
                ),
            )
        })?;
        tracing::info!(
            pid = child.id().unwrap_or(0),
            command = %self.command.program.to_string_lossy(),
            env = env.len(),
            "child started"
        );
        self.env_digest = Some(digest(env));
        self.child = Some(child);
        self.group = group;
        Ok(())
    }

    /// The running child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// After a round of the agent: `env` is this round's `[env]` (`None`
    /// when it could not be rendered: the child keeps the old one), and
    /// `files_changed` whether the round wrote a file. Restarts or signals
    /// the child when either changed.
    pub async fn after_round(
        &mut self,
        env: Option<&EnvValues>,
        files_changed: bool,
    ) -> std::io::Result<()> {
        let env_changed = env.is_some_and(|e| Some(digest(e)) != self.env_digest);
        if !env_changed && !files_changed {
            return Ok(());
        }
        let why = if env_changed {
            "an [env] value changed"
        } else {
            "a file changed"
        };
        match self.settings.on_change {
            OnChange::Signal => {
                let Some(pid) = self.pid() else {
                    return Ok(());
                };
                tracing::info!(pid, signal = %self.settings.signal, reason = why, "signalling child");
                if let Some(e) = env {
                    // The running process cannot see new values; remember
                    // them as delivered so the signal is not repeated.
                    self.env_digest = Some(digest(e));
                }
                signals::send(pid, self.group, &self.settings.signal)
            }
            OnChange::Restart => {
                let Some(env) = env else {
                    tracing::warn!(
                        reason = why,
                        "not restarting the child: its [env] could not be rendered this round"
                    );
                    return Ok(());
                };
                tracing::info!(
                    pid = self.pid().unwrap_or(0),
                    reason = why,
                    "restarting child"
                );
                self.stop_child().await;
                self.start(env)
            }
        }
    }

    /// Stop the child for a restart: ask (SIGTERM), then kill after
    /// `stop_timeout`; waits for it either way.
    async fn stop_child(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Err(e) = signals::terminate(&mut child, self.group) {
            tracing::debug!(error = %e, "cannot ask the child to stop");
        }
        match tokio::time::timeout(self.settings.stop_timeout, child.wait()).await {
            Ok(Ok(status)) => tracing::info!(status = %status, "child stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot wait for the child"),
            Err(_) => {
                tracing::warn!(
                    timeout = %humantime::format_duration(self.settings.stop_timeout),
                    "child did not stop in time; killing it"
                );
                if let Err(e) = signals::kill_all(&mut child, self.group) {
                    tracing::debug!(error = %e, "cannot kill the child's group");
                }
                let _ = child.kill().await;
            }
        }
    }

    /// Resolves when the child exits on its own, with kvsync's exit code;
    /// never resolves when no child runs. Cancel-safe.
    pub async fn exited(&mut self) -> u8 {
        let Some(child) = self.child.as_mut() else {
            return std::future::pending().await;
        };
        let code = match child.wait().await {
            Ok(status) => {
                tracing::info!(status = %status, "child exited");
                signals::exit_code(status)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for the child");
                crate::app::EXIT_SYNC_FAILED
            }
        };
        self.child = None;
        code
    }

    /// kvsync was asked to stop: forward the stop signal to the child and
    /// wait for it to exit; returns the exit code. Every further
    /// SIGTERM/SIGINT to kvsync while it waits (`stop` changes) is forwarded
    /// too: a child may miss or defer the first one (`sh -c` catches a
    /// SIGINT that arrives before it forked its command and acts on it only
    /// when that command ends), and an operator's second Ctrl-C must reach
    /// it. A child that ignores the signals is waited for: the supervisor of
    /// kvsync (container runtime, systemd) owns the final kill, as it would
    /// without kvsync.
    pub async fn stop(&mut self, stop: &mut watch::Receiver<bool>) -> u8 {
        let Some(pid) = self.pid() else {
            return signals::stopped_exit_code(self.stop_signal.get());
        };
        // The signal that brought us here is forwarded now, not again.
        stop.mark_unchanged();
        self.forward_stop(pid);
        // Bounded: each pass forwards one signal kvsync received or ends.
        loop {
            tokio::select! {
                code = self.exited() => return code,
                changed = stop.changed() => match changed {
                    Ok(()) => self.forward_stop(pid),
                    // No more signals can come: just wait.
                    Err(_) => return self.exited().await,
                },
            }
        }
    }

    /// Forward the stop signal kvsync received last (or, with none
    /// recorded, ask the child to stop).
    fn forward_stop(&mut self, pid: u32) {
        match self.stop_signal.get() {
            Some(s) => {
                tracing::info!(pid, signal = s, "forwarding stop signal to the child");
                if let Err(e) = signals::forward(pid, self.group, s) {
                    tracing::warn!(error = %e, "cannot forward the signal");
                }
            }
            None => {
                if let Some(child) = self.child.as_mut()
                    && let Err(e) = signals::terminate(child, self.group)
                {
                    tracing::warn!(error = %e, "cannot stop the child");
                }
            }
        }
    }

    /// The stop timeout in force (for tests and logs).
    pub fn stop_timeout(&self) -> Duration {
        self.settings.stop_timeout
    }
}
