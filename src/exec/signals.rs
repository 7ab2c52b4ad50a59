//! Platform code of `kvsync exec`, in one place: sending a signal to the
//! child, asking it to stop, turning its exit status into kvsync's exit
//! code, and the signal triggers that remember which stop signal arrived
//! (so it can be forwarded). Unix has signals; elsewhere a stop is a kill
//! and `on_change = "signal"` is rejected by the config.
//!
//! On Unix the child leads its own process group (unless kvsync's stdin is
//! a terminal, where the child must stay in the foreground group to read
//! it) and signals go to the whole group: a `sh -c '...; server'` wrapper
//! does not pass SIGTERM on, and a restart must not leave the old server
//! running beside the new one.

use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::agent::Triggers;

/// Exit code when the child's status carries neither a code nor a signal
/// (cannot happen on Unix; kept total).
const EXIT_UNKNOWN: u8 = 1;

/// The stop signal received by kvsync (0: none yet), shared between the
/// signal task and the supervisor, which forwards it.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicI32>);

impl StopSignal {
    pub fn get(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }

    // Only the Unix signal task records which stop signal arrived.
    #[cfg_attr(not(unix), allow(dead_code))]
    fn set(&self, signal: i32) {
        self.0.store(signal, Ordering::SeqCst);
    }
}

/// kvsync's exit code for a child that ended with `status`: its exit code,
/// or 128 + the signal number when a signal killed it (the shell's rule).
pub fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(EXIT_UNKNOWN);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from((128 + signal) & 0xff).unwrap_or(EXIT_UNKNOWN);
        }
    }
    EXIT_UNKNOWN
}

/// kvsync's exit code when it was stopped by `signal` before any child ran.
pub fn stopped_exit_code(signal: Option<i32>) -> u8 {
    signal
        .and_then(|s| u8::try_from((128 + s) & 0xff).ok())
        .unwrap_or(0)
}

#[cfg(unix)]
mod imp {
    use futures::StreamExt;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use tokio::sync::{mpsc, watch};

    use super::{StopSignal, Triggers};

    /// The signal named in `[exec] signal` (checked by the config).
    fn by_name(name: &str) -> std::io::Result<Signal> {
        name.parse::<Signal>().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown signal {name}"),
            )
        })
    }

    /// Make the child lead a new process group unless stdin is a
    /// terminal; returns whether it does (then signals go to the group).
    pub fn configure(cmd: &mut tokio::process::Command) -> bool {
        use std::io::IsTerminal;
        let own_group = !std::io::stdin().is_terminal();
        if own_group {
            cmd.process_group(0);
        }
        own_group
    }

    fn send_raw(pid: u32, group: bool, signal: Signal) -> std::io::Result<()> {
        let pid = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
        // kill(-pgid) signals every process of the group (POSIX kill(2)).
        let target = if group { -pid } else { pid };
        kill(Pid::from_raw(target), signal).map_err(std::io::Error::from)
    }

    /// Send the signal named `name` (e.g. `SIGHUP`) to `pid` (its group).
    pub fn send(pid: u32, group: bool, name: &str) -> std::io::Result<()> {
        send_raw(pid, group, by_name(name)?)
    }

    /// Forward signal number `signal` to `pid` (its group).
    pub fn forward(pid: u32, group: bool, signal: i32) -> std::io::Result<()> {
        let signal = Signal::try_from(signal).map_err(std::io::Error::from)?;
        send_raw(pid, group, signal)
    }

    /// Ask the child (its group) to stop: SIGTERM.
    pub fn terminate(child: &mut tokio::process::Child, group: bool) -> std::io::Result<()> {
        match child.id() {
            Some(pid) => send_raw(pid, group, Signal::SIGTERM),
            None => Ok(()),
        }
    }

    /// Kill the child (its group): SIGKILL, after the stop timeout.
    pub fn kill_all(child: &mut tokio::process::Child, group: bool) -> std::io::Result<()> {
        match child.id() {
            Some(pid) => send_raw(pid, group, Signal::SIGKILL),
            None => Ok(()),
        }
    }

    /// SIGHUP reloads; SIGTERM/SIGINT stop, remembering which one arrived.
    pub fn triggers() -> std::io::Result<(Triggers, StopSignal)> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
        let (reload_tx, reload) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let received = StopSignal::default();
        let seen = received.clone();
        tokio::spawn(async move {
            while let Some(signal) = signals.next().await {
                if signal == SIGHUP {
                    let _ = reload_tx.send(());
                } else {
                    seen.set(signal);
                    let _ = stop_tx.send(true);
                }
            }
        });
        Ok((Triggers { reload, stop }, received))
    }
}

#[cfg(not(unix))]
mod imp {
    use super::{StopSignal, Triggers};

    pub fn configure(_cmd: &mut tokio::process::Command) -> bool {
        false
    }

    pub fn send(_pid: u32, _group: bool, name: &str) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("cannot send {name}: no signals on this platform"),
        ))
    }

    pub fn forward(_pid: u32, _group: bool, _signal: i32) -> std::io::Result<()> {
        Ok(())
    }

    /// No signals: stopping is terminating the process.
    pub fn terminate(child: &mut tokio::process::Child, _group: bool) -> std::io::Result<()> {
        child.start_kill()
    }

    pub fn kill_all(child: &mut tokio::process::Child, _group: bool) -> std::io::Result<()> {
        child.start_kill()
    }

    pub fn triggers() -> std::io::Result<(Triggers, StopSignal)> {
        Ok((crate::agent::signal_triggers()?, StopSignal::default()))
    }
}

pub use imp::{configure, forward, kill_all, send, terminate, triggers};

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        // Killed by SIGTERM (15): 143; by SIGKILL (9): 137.
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(stopped_exit_code(Some(15)), 143);
        assert_eq!(stopped_exit_code(None), 0);
    }
}
