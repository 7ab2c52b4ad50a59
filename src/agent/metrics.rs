//! Prometheus metrics of the agent (`/metrics`, text exposition format via
//! prometheus-client). Labels carry aliases, paths and error kinds — never a
//! value.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sync::FailureKind;

type Labels = Vec<(String, String)>;

type TimeGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub rounds: Family<Labels, Counter>,
    pub failures: Family<Labels, Counter>,
    pub files_written: Counter,
    pub hooks_run: Counter,
    pub hooks_failed: Counter,
    pub file_last_success: Family<Labels, TimeGauge>,
    pub token_expiry: TimeGauge,
    pub secret_expiry: Family<Labels, TimeGauge>,
    pub certificate_expiry: Family<Labels, TimeGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kvsync");
        let m = Self {
            rounds: Family::default(),
            failures: Family::default(),
            files_written: Counter::default(),
            hooks_run: Counter::default(),
            hooks_failed: Counter::default(),
            file_last_success: Family::default(),
            token_expiry: TimeGauge::default(),
            secret_expiry: Family::default(),
            certificate_expiry: Family::default(),
            registry: Registry::default(),
        };
        registry.register("rounds", "Sync rounds by result", m.rounds.clone());
        registry.register(
            "failures",
            "Failures by kind (config, identity, vault, certificate, render, verify, write, hook, deadline)",
            m.failures.clone(),
        );
        registry.register("files_written", "Files written", m.files_written.clone());
        registry.register("hooks_run", "on_change hooks run", m.hooks_run.clone());
        registry.register(
            "hooks_failed",
            "on_change hooks failed",
            m.hooks_failed.clone(),
        );
        registry.register(
            "file_last_success_timestamp_seconds",
            "Last time each file was confirmed up to date (Unix seconds)",
            m.file_last_success.clone(),
        );
        registry.register(
            "token_expiry_timestamp_seconds",
            "Expiry of the current access token (Unix seconds)",
            m.token_expiry.clone(),
        );
        registry.register(
            "secret_expiry_timestamp_seconds",
            "The `expires` attribute of each secret that has one (Unix seconds)",
            m.secret_expiry.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of each rendered certificate (Unix seconds)",
            m.certificate_expiry.clone(),
        );
        // Zero-valued series exist from the start, so dashboards and
        // alerts see `0` rather than "no data".
        for result in ["ok", "failed"] {
            let _ = m.rounds.get_or_create(&label("result", result));
        }
        for kind in FailureKind::ALL {
            let _ = m.failures.get_or_create(&label("kind", kind.as_str()));
        }
        Self { registry, ..m }
    }

    pub fn round(&self, result: &str) {
        self.rounds.get_or_create(&label("result", result)).inc();
    }

    pub fn failure(&self, kind: FailureKind) {
        self.failures
            .get_or_create(&label("kind", kind.as_str()))
            .inc();
    }

    pub fn file_ok(&self, path: &str, now_unix: f64) {
        self.file_last_success
            .get_or_create(&label("path", path))
            .set(now_unix);
    }

    pub fn secret_expires(&self, alias: &str, unix: i64) {
        self.secret_expiry
            .get_or_create(&label("alias", alias))
            .set(unix as f64);
    }

    pub fn certificate_expires(&self, alias: &str, unix: i64) {
        self.certificate_expiry
            .get_or_create(&label("alias", alias))
            .set(unix as f64);
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), value.to_owned())]
}
