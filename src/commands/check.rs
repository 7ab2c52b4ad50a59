//! `kvsync check`: validate config and compile every template, offline;
//! with `--online`, also fetch every secret and report versions, expiry and
//! certificate facts. Never prints a secret value.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::commands::{EXIT_OK, EXIT_SYNC_FAILED, EXIT_USAGE};
use crate::sync::{Engine, RoundOptions, RoundState, SECS_PER_DAY, unix_now};

pub fn run(path: &Path) -> u8 {
    let config = match crate::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    if let Err(errors) = crate::render::Renderer::compile(&config) {
        for e in errors {
            eprintln!("{e}");
        }
        return EXIT_USAGE;
    }
    println!(
        "{}: OK ({} secrets, {} files)",
        path.display(),
        config.secrets.len(),
        config.files.len()
    );
    EXIT_OK
}

/// `kvsync check --online`: fetch every declared secret with the real
/// identity and report what would be delivered (never a value). Exit 1 if
/// any fetch or certificate normalisation fails.
pub async fn online(engine: &Engine) -> u8 {
    let (_never, mut stop) = tokio::sync::watch::channel(false);
    let outcome = engine
        .round(&mut RoundState::default(), RoundOptions::check(), &mut stop)
        .await;
    let ctx = outcome.context.unwrap_or_default();
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
    let _ = out.flush();
    drop(out);
    for e in &outcome.failures {
        eprintln!("kvsync: {e}");
    }
    if !outcome.failures.is_empty() {
        eprintln!("({})", crate::TROUBLESHOOTING);
        EXIT_SYNC_FAILED
    } else {
        println!("online: OK ({} secrets fetched)", ctx.secrets.len());
        EXIT_OK
    }
}

/// A Unix time as RFC 3339 (UTC), or `none` when absent.
fn time_or(t: Option<i64>, none: &str) -> String {
    match t.and_then(|s| u64::try_from(s).ok()) {
        Some(s) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        }
        None => none.to_owned(),
    }
}
