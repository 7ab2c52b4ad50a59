//! The long-running agent (`kvsync run`): a round at start, then every
//! `interval` + random `jitter`; `SIGHUP` or an edit of the config or a
//! template reloads and syncs now; `SIGTERM`/`SIGINT` finish the group being
//! written, start no new round and exit 0. Outages are retried with capped
//! exponential backoff; errors are logged once per state change. Between
//! rounds the agent sleeps: one timer, no polling.

pub mod health;
pub mod metrics;
pub mod on_demand;
pub mod round;
pub mod schedule;
pub mod sdnotify;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, watch as tokio_watch};

use crate::app::{self, AppError};
use crate::env::Env;
use crate::exec::Supervisor;
use crate::sync::{Engine, FailureKind, Outcome, RoundState};

use self::health::Health;
use self::metrics::Metrics;
use self::on_demand::OnDemand;
use self::schedule::Schedule;
use self::sdnotify::Notifier;
use self::watch::ConfigWatcher;

/// Why the agent woke up between rounds.
enum Wake {
    Timer,
    Reload(&'static str),
    Stop,
    /// `POST /sync`.
    OnDemand,
    /// The `kvsync exec` child exited on its own, with this exit code.
    ChildExited(u8),
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
    on_demand: Arc<OnDemand>,
    /// Rounds run so far (`POST /sync` answers carry the number).
    rounds: u64,
    /// The `kvsync exec` child, when supervising one.
    exec: Option<Supervisor>,
}

/// Run the agent until a stop trigger.
pub async fn run(
    path: &Path,
    env: &Env,
    engine: Engine,
    triggers: Triggers,
) -> Result<(), AppError> {
    run_with(path, env, engine, triggers, None)
        .await
        .map(|_| ())
}

/// The agent loop, optionally supervising a `kvsync exec` child that was
/// started after an all-or-nothing first round: the loop then begins by
/// waiting, restarts or signals the child after rounds that changed its
/// `[env]` or a file, and ends when the child exits or after forwarding a
/// stop signal to it. Returns the child's exit code (0 without a child).
pub async fn run_with(
    path: &Path,
    env: &Env,
    engine: Engine,
    mut triggers: Triggers,
    exec: Option<Supervisor>,
) -> Result<u8, AppError> {
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
    let on_demand =
        Arc::new(OnDemand::new(config.agent.listen.is_some_and(|a| {
            OnDemand::allowed_for(a, config.agent.allow_remote_sync)
        })));
    let _server = match config.agent.listen {
        Some(addr) => Some(
            health::serve(
                addr,
                health.clone(),
                metrics.clone(),
                Some(on_demand.clone()),
            )
            .await
            .map_err(|source| AppError::Io {
                what: format!("cannot listen on {addr}"),
                source,
            })?,
        ),
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
        on_demand,
        rounds: 0,
        exec,
    };
    // With a child, the first round already ran (and succeeded).
    let mut delay = None;
    if agent.exec.is_some() {
        agent.first_round_done();
        delay = Some(agent.schedule.after_success());
    }
    let code = loop {
        if let Some(d) = delay.take() {
            match agent.wait(d, &mut triggers).await {
                Wake::Timer | Wake::OnDemand => {}
                Wake::Reload(why) => agent.reload(why),
                Wake::Stop => break agent.stop_child(&mut triggers.stop).await,
                Wake::ChildExited(code) => break code,
            }
        }
        agent.on_demand.begin();
        let outcome = round::run(
            &agent.engine,
            &mut agent.state,
            &agent.metrics,
            &mut triggers.stop,
        )
        .await;
        agent.rounds += 1;
        agent
            .on_demand
            .finish(on_demand::Summary::of(agent.rounds, &outcome));
        delay = Some(agent.after_round(&outcome));
        if agent.notifier.watchdog_period().is_some() {
            agent.notifier.watchdog();
        }
        agent.token_metrics().await;
        if let Some(exec) = agent.exec.as_mut()
            && !outcome.interrupted
            && let Err(e) = exec
                .after_round(outcome.env.as_ref(), outcome.changed().next().is_some())
                .await
        {
            tracing::error!(error = %e, "cannot restart or signal the child");
        }
        if outcome.interrupted || *triggers.stop.borrow() {
            break agent.stop_child(&mut triggers.stop).await;
        }
    };
    agent.notifier.stopping();
    tracing::info!("stopping");
    Ok(code)
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
    /// Readiness after a first round run outside the loop (`kvsync exec`).
    fn first_round_done(&mut self) {
        self.metrics.round("ok");
        self.health.success();
        self.ready = true;
        self.notifier.ready("first sync complete; child started");
        self.notifier.status("in sync");
    }

    /// The agent stops: a supervised child gets the stop signal and is
    /// waited for (its status is the exit code); otherwise exit 0.
    /// Further stop signals (`stop`) are forwarded to the child too.
    async fn stop_child(&mut self, stop: &mut tokio_watch::Receiver<bool>) -> u8 {
        match self.exec.as_mut() {
            Some(exec) => exec.stop(stop).await,
            None => app::EXIT_OK,
        }
    }

    /// Metrics, health, logs and notifications after a round; returns the
    /// delay before the next one.
    fn after_round(&mut self, outcome: &Outcome) -> std::time::Duration {
        let state = outcome.state_key();
        // Health and metrics first: "round complete" in the log means the
        // endpoint already answers for this round.
        if outcome.ok() {
            self.metrics.round("ok");
            self.health.success();
        } else {
            self.metrics.round("failed");
            self.health.failure(
                outcome.failures.iter().map(|f| f.kind().as_str()),
                state.clone(),
            );
        }
        tracing::info!(
            ok = outcome.ok(),
            files_written = outcome.changed().count(),
            hooks_run = outcome.hooks_run.len(),
            failures = outcome.failures.len(),
            "round complete"
        );
        if outcome.ok() {
            if !self.last_state.is_empty() {
                tracing::info!("recovered: all files are up to date");
            }
            if !self.ready {
                self.ready = true;
                self.notifier.ready("first sync complete");
            }
            self.notifier.status("in sync");
        } else {
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
        let child = async {
            match self.exec.as_mut() {
                Some(exec) => exec.exited().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(watcher);
        tokio::pin!(child);
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
                () = self.on_demand.requested() => {
                    tracing::info!("round requested (POST /sync)");
                    return Wake::OnDemand;
                }
                code = &mut child => return Wake::ChildExited(code),
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
                if let Some(addr) = config.agent.listen {
                    self.on_demand
                        .set_allowed(OnDemand::allowed_for(addr, config.agent.allow_remote_sync));
                }
                if let Some(exec) = self.exec.as_mut() {
                    exec.set_settings(config.exec.clone());
                }
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
    fn rebuild(&self) -> Result<Engine, AppError> {
        let keep = (self.engine.config(), self.engine.vault());
        app::engine(&self.path, &self.env, Some(keep))
    }
}
