//! The long-running agent (`kvsync run`): a round at start, then every
//! `interval` + random `jitter`; `SIGHUP` or an edit of the config or a
//! template reloads and syncs now; `SIGTERM`/`SIGINT` finish the group being
//! written, start no new round and exit 0. Outages are retried with capped
//! exponential backoff; errors are logged once per state change. Between
//! rounds the agent sleeps: one timer, no polling.

pub mod health;
pub mod metrics;
pub mod round;
pub mod schedule;
pub mod sdnotify;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, watch as tokio_watch};

use crate::commands::{self, EXIT_OK, SetupError};
use crate::env::Env;
use crate::sync::{Engine, FailureKind, Outcome, RoundState};

use self::health::Health;
use self::metrics::Metrics;
use self::schedule::Schedule;
use self::sdnotify::Notifier;
use self::watch::ConfigWatcher;

/// Why the agent woke up between rounds.
enum Wake {
    Timer,
    Reload(&'static str),
    Stop,
}

/// Triggers from outside: signals (and tests' stand-ins for them).
pub struct Triggers {
    pub reload: mpsc::UnboundedReceiver<()>,
    pub stop: tokio_watch::Receiver<bool>,
}

/// Install SIGHUP/SIGTERM/SIGINT handlers (signal-hook) feeding [`Triggers`].
pub fn signal_triggers() -> std::io::Result<Triggers> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let (reload_tx, reload) = mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio_watch::channel(false);
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

struct Agent {
    path: PathBuf,
    env: Env,
    engine: Engine,
    watcher: Option<ConfigWatcher>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    notifier: Notifier,
    schedule: Schedule,
    /// Change detection, warn-once sets and hooks still to run: kept
    /// across rounds and reloads.
    state: RoundState,
    /// Summary of the last round's failures ("" when healthy), so errors
    /// are logged once per state change rather than once per retry.
    last_state: String,
    ready: bool,
}

/// Run the agent until a stop trigger; returns the exit code.
pub async fn run(path: &Path, env: &Env, engine: Engine, mut triggers: Triggers) -> u8 {
    let config = engine.config().clone();
    // Temp files a killed predecessor left next to the destinations.
    for index in 0..config.files.len() {
        let removed = crate::write::sweep_stale_temps(&engine.target(index));
        if removed > 0 {
            tracing::info!(path = %config.files[index].path.display(), removed, "removed stale temp files");
        }
    }
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(config.agent.interval));
    let _server = match config.agent.listen {
        Some(addr) => match health::serve(addr, health.clone(), metrics.clone()).await {
            Ok(handle) => Some(handle),
            Err(e) => {
                eprintln!("kvsync: cannot listen on {addr}: {e}");
                return commands::EXIT_SYNC_FAILED;
            }
        },
        None => None,
    };
    let notifier = Notifier::from_env(env);
    // The watchdog is pinged from this loop only (after each round and while
    // waiting for the next), never by an independent task: a hung round
    // stops the pings and systemd's WatchdogSec= restarts the agent. Set it
    // above [agent] deadline plus the hooks' time.
    let mut agent = Agent {
        path: path.to_path_buf(),
        env: env.clone(),
        watcher: start_watcher(&config),
        schedule: Schedule::new(config.agent.interval, config.agent.jitter),
        engine,
        metrics,
        health,
        notifier,
        state: RoundState::default(),
        last_state: String::new(),
        ready: false,
    };
    loop {
        let outcome = round::run(
            &agent.engine,
            &mut agent.state,
            &agent.metrics,
            &mut triggers.stop,
        )
        .await;
        let delay = agent.after_round(&outcome);
        if agent.notifier.watchdog_period().is_some() {
            agent.notifier.watchdog();
        }
        agent.token_metrics().await;
        if outcome.interrupted || *triggers.stop.borrow() {
            break;
        }
        match agent.wait(delay, &mut triggers).await {
            Wake::Timer => {}
            Wake::Reload(why) => agent.reload(why),
            Wake::Stop => break,
        }
    }
    agent.notifier.stopping();
    tracing::info!("stopping");
    EXIT_OK
}

fn start_watcher(config: &crate::config::Config) -> Option<ConfigWatcher> {
    match ConfigWatcher::new(config) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config for edits; SIGHUP still reloads");
            None
        }
    }
}

impl Agent {
    /// Metrics, health, logs and notifications after a round; returns the
    /// delay before the next one.
    fn after_round(&mut self, outcome: &Outcome) -> std::time::Duration {
        let state = outcome.state_key();
        tracing::info!(
            ok = outcome.ok(),
            files_written = outcome.changed().count(),
            hooks_run = outcome.hooks_run.len(),
            failures = outcome.failures.len(),
            "round complete"
        );
        if outcome.ok() {
            self.metrics.round("ok");
            self.health.success();
            if !self.last_state.is_empty() {
                tracing::info!("recovered: all files are up to date");
            }
            if !self.ready {
                self.ready = true;
                self.notifier.ready("first sync complete");
            }
            self.notifier.status("in sync");
        } else {
            self.metrics.round("failed");
            self.health.failure(
                outcome.failures.iter().map(|f| f.kind().as_str()),
                state.clone(),
            );
            if state != self.last_state {
                for failure in &outcome.failures {
                    tracing::error!(kind = failure.kind().as_str(), "{failure}");
                }
            } else {
                tracing::debug!(failures = outcome.failures.len(), "still failing");
            }
            self.notifier.status("sync failing; retrying");
        }
        self.last_state = state;
        if outcome.ok() {
            self.schedule.after_success()
        } else if outcome.transient() || !self.state.hooks.is_empty() {
            self.schedule.after_failure(None)
        } else {
            self.schedule.after_success()
        }
    }

    /// Export the earliest cached token expiry (never the token).
    async fn token_metrics(&self) {
        let expiries = self.engine.vault().tokens().expiries().await;
        if let Some(earliest) = expiries.iter().map(|(_, t)| *t).min() {
            let unix = earliest
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.metrics.token_expiry.set(unix);
        }
    }

    async fn wait(&mut self, delay: std::time::Duration, triggers: &mut Triggers) -> Wake {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let watcher = async {
            match self.watcher.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(watcher);
        let period = self.notifier.watchdog_period();
        let mut tick =
            tokio::time::interval(period.unwrap_or(std::time::Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded: each pass either returns or waits one watchdog period,
        // and `sleep` ends the loop after `delay`.
        loop {
            tokio::select! {
                _ = &mut sleep => return Wake::Timer,
                Some(()) = triggers.reload.recv() => return Wake::Reload("SIGHUP"),
                _ = &mut watcher => return Wake::Reload("config or template edited"),
                _ = triggers.stop.wait_for(|s| *s) => return Wake::Stop,
                _ = tick.tick(), if period.is_some() => self.notifier.watchdog(),
            }
        }
    }

    /// Reload config and templates; on error keep running on the last valid
    /// config and log the same message `check` prints.
    fn reload(&mut self, why: &'static str) {
        self.notifier.reloading();
        tracing::info!(reason = why, path = %self.path.display(), "reloading config");
        match self.rebuild() {
            Ok(engine) => {
                let config = engine.config().clone();
                self.schedule
                    .reconfigure(config.agent.interval, config.agent.jitter);
                self.health.set_interval(config.agent.interval);
                self.watcher = start_watcher(&config);
                self.state.retain_declared(&config);
                self.engine = engine;
                tracing::info!("config reloaded");
            }
            Err(e) => {
                self.metrics.failure(FailureKind::Config);
                tracing::error!("config reload rejected, keeping the last valid config:\n{e}");
                // Re-arm the watcher in case the edit replaced watched dirs.
                self.watcher = start_watcher(self.engine.config());
            }
        }
        self.notifier.reloaded("reloaded");
    }

    /// A new engine for the reloaded config, keeping the vault client (and
    /// its cached token) when the identity and TLS settings are unchanged.
    fn rebuild(&self) -> Result<Engine, SetupError> {
        let (config, renderer) = commands::load(&self.path)?;
        let old = self.engine.config();
        let same_client =
            format!("{:?}{:?}", config.auth, config.tls) == format!("{:?}{:?}", old.auth, old.tls);
        let vault = if same_client {
            self.engine.vault().clone()
        } else {
            commands::vault_client(&config, &self.env)?
        };
        Ok(Engine::new(config, renderer, vault))
    }
}
