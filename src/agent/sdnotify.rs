//! systemd `sd_notify` for a `Type=notify` unit: READY, RELOADING, STOPPING,
//! WATCHDOG and STATUS messages as datagrams to `$NOTIFY_SOCKET`. A no-op
//! when the variable is unset (not under systemd).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::env::Env;

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env(env: &Env) -> Self {
        let socket = env.var("NOTIFY_SOCKET").and_then(|path| {
            UnixDatagram::unbound()
                .ok()
                .map(|sock| (sock, path.to_owned()))
        });
        // systemd passes WATCHDOG_USEC; we ping at half that period, as
        // sd_watchdog_enabled(3) recommends.
        let watchdog = env
            .var("WATCHDOG_USEC")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(|usec| Duration::from_micros(usec / 2));
        Self { socket, watchdog }
    }

    /// Period at which to send `WATCHDOG=1`, when the watchdog is enabled.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn reloading(&self) {
        let usec = monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// After a reload: systemd expects READY=1 again.
    pub fn reloaded(&self, status: &str) {
        self.ready(status);
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    fn send(&self, message: &str) {
        let Some((sock, path)) = &self.socket else {
            return;
        };
        let result = if let Some(name) = path.strip_prefix('@') {
            send_abstract(sock, name, message)
        } else {
            sock.send_to(message.as_bytes(), path).map(|_| ())
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &str, message: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    sock.send_to_addr(message.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("abstract sockets are Linux-only"))
}

fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}
