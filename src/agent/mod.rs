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

/// Stop/reload triggers from the OS: SIGTERM/SIGINT/SIGHUP on Unix,
/// console events on Windows (the Windows service builds its own).
pub use crate::platform::signal_triggers;

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
    let _watchdog = notifier.watchdog_period().map(|period| {
        let n = Notifier::from_env(env);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                n.watchdog();
            }
        })
    });
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
            self.health.failure(state.clone());
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
        tokio::select! {
            _ = &mut sleep => Wake::Timer,
            Some(()) = triggers.reload.recv() => Wake::Reload("SIGHUP"),
            _ = watcher => Wake::Reload("config or template edited"),
            _ = triggers.stop.wait_for(|s| *s) => Wake::Stop,
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
