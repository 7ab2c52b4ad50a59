//! Watching the config file and templates for edits (notify/inotify).
//! Directories are watched, not files, because editors save by rename. Raw
//! notify events are debounced here, on the tokio side, so an idle agent has
//! no timer ticking: the watcher thread sleeps in inotify until something
//! changes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, FileSource};

/// Quiet period after the last relevant event before a reload: editors
/// write, rename and chmod in quick succession.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// At most one watch-triggered reload (and round) per this period, however
/// many events a storm of edits produces (SIGHUP is not limited).
pub const MIN_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

pub struct ConfigWatcher {
    _watcher: RecommendedWatcher,
    /// Capacity 1: events coalesce while one is pending (a storm allocates
    /// nothing).
    events: mpsc::Receiver<()>,
    last: Option<tokio::time::Instant>,
}

/// Files and directories whose edits trigger a reload.
fn watched(config: &Config) -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    files.insert(config.source.clone());
    dirs.insert(config.agent.templates_dir.clone());
    for f in &config.files {
        if let FileSource::Template(path) = &f.source {
            files.insert(path.clone());
        }
    }
    for f in &files {
        if let Some(parent) = f.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    (files, dirs)
}

impl ConfigWatcher {
    pub fn new(config: &Config) -> notify::Result<Self> {
        let (files, dirs) = watched(config);
        let templates_dir = config.agent.templates_dir.clone();
        let (tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else { return };
                if event.kind.is_access() {
                    return;
                }
                let relevant = event
                    .paths
                    .iter()
                    .any(|p| files.contains(p) || p.parent() == Some(templates_dir.as_path()));
                if relevant {
                    let _ = tx.try_send(());
                }
            })?;
        for dir in &dirs {
            if dir.is_dir() {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
            }
        }
        Ok(Self {
            _watcher: watcher,
            events,
            last: None,
        })
    }

    /// Wait for an edit, then for [`DEBOUNCE`] of quiet (at most
    /// [`MIN_RELOAD_INTERVAL`] of it: a storm cannot postpone a reload
    /// forever), and no sooner than [`MIN_RELOAD_INTERVAL`] after the
    /// previous one.
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
        let first = tokio::time::Instant::now();
        while first.elapsed() < MIN_RELOAD_INTERVAL {
            match tokio::time::timeout(DEBOUNCE, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + MIN_RELOAD_INTERVAL).await;
            // Edits during the wait are part of this reload.
            while self.events.try_recv().is_ok() {}
        }
        self.last = Some(tokio::time::Instant::now());
    }
}
