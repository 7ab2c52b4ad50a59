//! `kvsync check`: validate config and compile every template, offline;
//! with `--online`, also fetch every secret and report versions, expiry and
//! certificate facts. Never prints a secret value.

use std::io::Write as _;
use std::path::Path;

use crate::app::AppError;
use crate::sync::{Engine, RoundOptions, RoundState, SECS_PER_DAY, unix_now};

pub fn run(path: &Path) -> Result<(), AppError> {
    let (config, _) = crate::app::load(path)?;
    println!(
        "{}: OK ({} secrets, {}{} files)",
        path.display(),
        config.secrets.len(),
        match config.selections.len() {
            0 => String::new(),
            n => format!("{n} selections, "),
        },
        config.files.len() + config.fanouts.len()
    );
    Ok(())
}

/// `kvsync check --online`: fetch every declared secret with the real
/// identity and report what would be delivered (never a value). Exit 1 if
/// any fetch or certificate normalisation fails.
pub async fn online(engine: &Engine) -> Result<(), AppError> {
    let (_never, mut stop) = tokio::sync::watch::channel(false);
    let mut outcome = engine
        .round(&mut RoundState::default(), RoundOptions::check(), &mut stop)
        .await;
    let ctx = outcome.context.take().unwrap_or_default();
    let now = unix_now();
    let mut out = std::io::stdout().lock();
    for (alias, spec) in &engine.config().secrets {
        let Some(bundle) = ctx.secrets.get(alias) else {
            continue;
        };
        let _ = writeln!(
            out,
            "secret {alias} ({}): version {}, updated {}, expires {}",
            spec.name,
            bundle.version,
            time_or(bundle.updated, "-"),
            time_or(bundle.expires, "never"),
        );
        if let Some(c) = ctx.certs.get(alias) {
            let days = c
                .not_after_unix
                .saturating_sub(now)
                .div_euclid(SECS_PER_DAY);
            let _ = writeln!(
                out,
                "  certificate: subject {}; SANs {}; thumbprint {}; notAfter {} ({days} days left); issuer {}; key {}",
                c.subject,
                if c.sans.is_empty() {
                    "-".to_owned()
                } else {
                    c.sans.join(", ")
                },
                c.thumbprint,
                c.not_after,
                c.issuer,
                c.key_algorithm,
            );
        }
    }
    for (alias, spec) in &engine.config().secrets {
        if let Some(k) = ctx.keys.get(alias) {
            let _ = writeln!(
                out,
                "key {alias} ({}): {}, kid {}",
                spec.name, k.key.algorithm, k.kid
            );
        } else if let (true, Some(c)) = (spec.public_only, ctx.certs.get(alias)) {
            let _ = writeln!(
                out,
                "certificate {alias} ({}, public only): subject {}; thumbprint {}; notAfter {}; serial {}",
                spec.name, c.subject, c.thumbprint, c.not_after, c.serial
            );
        }
    }
    for (alias, list) in &ctx.selected {
        let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
        let _ = writeln!(
            out,
            "selection {alias}: {} secrets matched{}{}",
            names.len(),
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        );
    }
    let _ = out.flush();
    drop(out);
    if !outcome.ok() {
        return Err(AppError::Check(outcome.failure_text()));
    }
    println!("online: OK ({} secrets fetched)", ctx.secrets.len());
    Ok(())
}

/// A Unix time as RFC 3339 (UTC), or `none` when absent.
fn time_or(t: Option<i64>, none: &str) -> String {
    t.and_then(crate::time::rfc3339)
        .unwrap_or_else(|| none.to_owned())
}
