//! A human-readable rendering of a resolved [`Config`] (what `check` and
//! support requests show): every default filled in, every path absolute.
//! It prints names, versions, paths and modes only — inline templates are
//! shown by size, never by content, in case one holds a literal secret.

use std::fmt::Write as _;

use super::{AuthMethod, Config, FileSource, OutputFormat, SecretKind, UserAssigned};

/// Render `config` for humans, one setting per line.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = write_summary(&mut out, config);
    out
}

fn write_summary(out: &mut String, c: &Config) -> std::fmt::Result {
    writeln!(out, "config:         {}", c.source.display())?;
    match &c.vault {
        Some(v) => writeln!(out, "vault:          {v}")?,
        None => writeln!(out, "vault:          (none; every secret names its own)")?,
    }
    let a = &c.agent;
    writeln!(
        out,
        "agent:          interval {}, jitter {}, deadline {}, concurrency {}, hook timeout {}",
        humantime::format_duration(a.interval),
        humantime::format_duration(a.jitter),
        humantime::format_duration(a.deadline),
        a.concurrency,
        humantime::format_duration(a.hook_timeout)
    )?;
    writeln!(out, "templates_dir:  {}", a.templates_dir.display())?;
    if let Some(l) = a.listen {
        writeln!(out, "listen:         {l}")?;
    }
    write_auth(out, c)?;
    if let Some(ca) = &c.tls.ca_file {
        writeln!(out, "tls ca_file:    {}", ca.display())?;
    }
    writeln!(out, "secrets ({}):", c.secrets.len())?;
    for s in c.secrets.values() {
        let kind = match s.kind {
            SecretKind::Secret => "secret",
            SecretKind::Certificate if s.public_only => "certificate (public only)",
            SecretKind::Certificate => "certificate",
            SecretKind::Key => "key",
        };
        let version = s.version.as_deref().unwrap_or("latest");
        writeln!(
            out,
            "  {} = {kind} {} ({version}) in {}",
            s.alias, s.name, s.vault
        )?;
    }
    if !c.selections.is_empty() {
        writeln!(out, "selections ({}):", c.selections.len())?;
        for s in c.selections.values() {
            let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                out,
                "  {} = prefix {:?}, tags [{}]{} in {}",
                s.alias,
                s.prefix,
                tags.join(", "),
                if s.strip_prefix {
                    ", prefix stripped"
                } else {
                    ""
                },
                s.vault
            )?;
        }
    }
    for f in &c.fanouts {
        let what = match &f.source {
            crate::config::FanoutSource::Selection { alias, .. } => format!("selection {alias}"),
            crate::config::FanoutSource::Ccs { alias, .. } => format!("ccs of {alias}"),
        };
        writeln!(out, "  directory {} <- {what}", f.dir.display())?;
    }
    writeln!(out, "files ({}):", c.files.len())?;
    for f in &c.files {
        writeln!(out, "  {} <- {}", f.path.display(), source(&f.source))?;
        if cfg!(windows) {
            let acl = if f.acl.is_empty() {
                "default (SYSTEM, Administrators)".to_owned()
            } else {
                Vec::from_iter(f.acl.iter().map(ToString::to_string)).join(", ")
            };
            write!(out, "      acl {acl}")?;
        } else {
            let owner = f.owner.map_or_else(|| "-".to_owned(), |u| u.to_string());
            let group = f.group.map_or_else(|| "-".to_owned(), |g| g.to_string());
            write!(
                out,
                "      mode {:04o}, owner {owner}, group {group}, dir_mode {:04o}",
                f.mode, f.dir_mode
            )?;
        }
        match &f.on_change {
            Some(cmd) => writeln!(out, ", on_change: {cmd}")?,
            None => writeln!(out)?,
        }
    }
    if !c.stores.is_empty() {
        writeln!(out, "stores ({}):", c.stores.len())?;
    }
    for s in &c.stores {
        writeln!(
            out,
            "  {} <- certificate {}, keep {}, exportable {}, rebind {}, accounts [{}]{}",
            s.label(),
            s.alias,
            s.keep,
            s.exportable,
            s.rebind,
            s.accounts.join(", "),
            s.on_change
                .as_ref()
                .map(|h| format!(", on_change: {h}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

fn write_auth(out: &mut String, c: &Config) -> std::fmt::Result {
    let auth = &c.auth;
    let method = match auth.method {
        AuthMethod::Auto => "auto",
        AuthMethod::Arc => "arc",
        AuthMethod::Imds => "imds",
        AuthMethod::WorkloadIdentity => "workload-identity",
    };
    write!(out, "auth:           method {method}")?;
    match &auth.user_assigned {
        Some(UserAssigned::ClientId(v)) => write!(out, ", client_id {v}")?,
        Some(UserAssigned::ObjectId(v)) => write!(out, ", object_id {v}")?,
        Some(UserAssigned::ResourceId(v)) => write!(out, ", resource_id {v}")?,
        None => {}
    }
    if let Some(v) = &auth.audience {
        write!(out, ", audience {v}")?;
    }
    writeln!(out)?;
    for (k, v) in [
        ("identity_endpoint", &auth.identity_endpoint),
        ("imds_endpoint", &auth.imds_endpoint),
        ("authority_host", &auth.authority_host),
    ] {
        if let Some(v) = v {
            writeln!(out, "  {k}: {v}")?;
        }
    }
    if let Some(d) = &auth.test_arc_token_dir {
        writeln!(
            out,
            "  insecure_test_arc_token_dir (TEST ONLY): {}",
            d.display()
        )?;
    }
    Ok(())
}

fn source(s: &FileSource) -> String {
    match s {
        FileSource::Template(p) => format!("template {}", p.display()),
        FileSource::Inline(t) => format!("inline template ({} bytes)", t.len()),
        FileSource::Object { alias, format } => {
            let f = match format {
                OutputFormat::Pfx => "pfx",
                OutputFormat::Pem => "pem",
                OutputFormat::Key => "key",
                OutputFormat::Cert => "cert",
                OutputFormat::Chain => "chain",
                OutputFormat::Fullchain => "fullchain",
                OutputFormat::Raw => "raw",
            };
            format!("secret {alias} as {f}")
        }
    }
}
