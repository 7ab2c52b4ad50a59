//! `kvsync whoami`: which identity source is used and through which
//! endpoint, the token's claims (tenant, object id, app id, audience,
//! expiry) and the host's instance metadata when the source has it.
//!
//! Invariants: the token itself is never printed (only decoded claims);
//! exit 1 with the reason (for `auto`: every source tried) when no identity
//! is usable, 2 for a bad config. Reads templates not at all: whoami works
//! even when a template is broken.

use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::app::AppError;
use crate::config::Config;
use crate::env::Env;
use crate::identity::{TokenSource, claims};

/// The audience whoami asks a token for: the default vault's, else
/// `[auth] audience`, else the public cloud's Key Vault audience.
fn audience(config: &Config) -> String {
    let explicit = config.auth.audience.as_deref();
    config
        .vault
        .as_ref()
        .and_then(|v| v.as_url())
        .or_else(|| config.secrets.values().find_map(|s| s.vault.as_url()))
        .and_then(|u| crate::vault::address::audience_for(u, explicit))
        .or_else(|| explicit.map(str::to_owned))
        .unwrap_or_else(|| "https://vault.azure.net".to_owned())
}

/// Gather everything whoami shows, as JSON (no token in it).
pub async fn report(config: &Config, env: &Env) -> Result<Value, AppError> {
    let vault = crate::app::vault_client(config, env)?;
    let source = vault.tokens().source().clone();
    let audience = audience(config);
    let token = source.fetch(&audience).await?;
    let c = claims::decode(token.token.expose_secret()).unwrap_or_default();
    drop(token);
    Ok(json!({
        "source": source_json(source.as_ref()),
        "tenant_id": c.tid,
        "object_id": c.oid,
        "app_id": c.appid.or(c.azp),
        "audience": c.aud.unwrap_or(audience),
        "expires_on": c.exp.map(format_unix),
        "instance": instance_json(source.as_ref()).await,
    }))
}

fn source_json(source: &dyn TokenSource) -> Value {
    let info = source.info();
    json!({ "kind": info.kind, "endpoint": info.endpoint })
}

async fn instance_json(source: &dyn TokenSource) -> Value {
    match source.instance_metadata().await {
        Ok(Some(compute)) => compute,
        Ok(None) => json!({ "unavailable": "this identity source has no instance metadata" }),
        Err(e) => json!({ "unavailable": e.to_string() }),
    }
}

fn format_unix(secs: i64) -> String {
    let Some(t) = crate::time::system_time(secs) else {
        return format!("{secs} (outside {})", crate::time::RANGE);
    };
    let left = t
        .duration_since(SystemTime::now())
        .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
        .unwrap_or_else(|_| "expired".to_owned());
    format!("{} (in {left})", humantime::format_rfc3339_seconds(t))
}

/// Human-readable rendering of [`report`].
pub fn text(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    line("source:", s(&r["source"]["kind"]));
    line("endpoint:", s(&r["source"]["endpoint"]));
    line("tenant id:", s(&r["tenant_id"]));
    line("object id:", s(&r["object_id"]));
    line("app id:", s(&r["app_id"]));
    line("audience:", s(&r["audience"]));
    line("token expires:", s(&r["expires_on"]));
    let inst = &r["instance"];
    if let Some(why) = inst.get("unavailable") {
        line("instance:", format!("unavailable ({})", s(why)));
        return out;
    }
    line("instance:", String::new());
    line("  name:", s(&inst["name"]));
    line("  subscription:", s(&inst["subscriptionId"]));
    line("  resource group:", s(&inst["resourceGroupName"]));
    line("  location:", s(&inst["location"]));
    let tags = inst["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    line("  tags:", tags);
    out
}

/// Run `kvsync whoami` (logging set up like every command; templates are
/// not compiled, so whoami works even when one is broken).
pub async fn run(
    path: &Path,
    env: &Env,
    cli_format: Option<crate::config::LogFormat>,
    as_json: bool,
) -> Result<(), AppError> {
    let config = crate::app::load_config(path)?;
    crate::app::init_logging(&config, cli_format, env);
    tracing::debug!(path = %path.display(), method = ?config.auth.method, "whoami");
    let r = report(&config, env).await?;
    if as_json {
        println!("{r:#}");
    } else {
        print!("{}", text(&r));
    }
    Ok(())
}
