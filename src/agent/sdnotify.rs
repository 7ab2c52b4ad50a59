//! systemd `sd_notify` for a `Type=notify` unit: READY, RELOADING, STOPPING,
//! WATCHDOG and STATUS messages as datagrams to `$NOTIFY_SOCKET`. A no-op
//! when the variable is unset (not under systemd).

use std::time::Duration;

use crate::env::Env;
use crate::platform::{NotifySocket, monotonic_usec};

pub struct Notifier {
    socket: Option<NotifySocket>,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env(env: &Env) -> Self {
        let socket = env.var("NOTIFY_SOCKET").and_then(NotifySocket::new);
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
        let Some(sock) = &self.socket else {
            return;
        };
        if let Err(e) = sock.send(message) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}
