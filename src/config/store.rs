//! Stage two for `[[store]]` tables (Windows certificate store targets):
//! the certificate alias, store location and name, key-access accounts,
//! `keep`, and the hook. Checked on every platform so a config is validated
//! anywhere; on Unix every `[[store]]` is also an error naming the
//! Windows-only key. Accounts are resolved to SIDs at import time
//! (`crate::store`), not here: names like `IIS AppPool\Site` exist only on
//! the host that runs them.

use std::collections::{BTreeMap, HashMap};

use toml::Spanned;

use super::files::hook_value;
use super::raw::{Problem, RawConfig, RawStore, RawStoreEntry};
use super::resolve::Problems;
use super::{DEFAULT_STORE_KEEP, SecretKind, SecretSpec, StoreLocation, StoreSpec};

/// Upper bound of `keep`: versions of one certificate left in a store.
/// Certificates rotate every few months; 10 covers years of history and
/// keeps a typo (`keep = 1000`) from turning the store into an archive.
pub const MAX_STORE_KEEP: i64 = 10;

/// Store names kvsync refuses: a vault's chain never becomes a trust anchor
/// (PROTOCOL.md §7: intermediates go to `CA`, never `Root`).
const FORBIDDEN_STORES: &[&str] = &["Root", "AuthRoot", "Disallowed"];

/// Resolve every `[[store]]`; two tables for the same certificate and store
/// are an error.
pub fn resolve_stores(
    raw: &RawConfig,
    secrets: &BTreeMap<String, SecretSpec>,
    p: &mut Problems,
) -> Vec<StoreSpec> {
    let mut out = Vec::new();
    let mut seen: HashMap<(String, StoreLocation, String), usize> = HashMap::new();
    for entry in &raw.stores {
        let key = format!("store[{}]", entry.index);
        if !cfg!(windows) {
            p.push(Problem::new(
                Some(entry.span.clone()),
                key.clone(),
                "[[store]] (the Windows certificate store) is a Windows-only key; on this platform deliver the certificate with [[file]] format = \"pfx\", \"pem\", \"key\" or \"fullchain\"",
            ));
        }
        let Some(spec) = resolve_one(&key, entry, secrets, p) else {
            continue;
        };
        let id = (
            spec.alias.clone(),
            spec.location,
            spec.name.to_ascii_lowercase(),
        );
        if let Some(first) = seen.get(&id) {
            p.push(Problem::new(
                Some(entry.span.clone()),
                key,
                format!(
                    "store[{first}] already puts certificate \"{}\" into {}; one [[store]] per certificate and store",
                    spec.alias,
                    spec.label()
                ),
            ));
            continue;
        }
        seen.insert(id, entry.index);
        out.push(spec);
    }
    out
}

fn resolve_one(
    key: &str,
    entry: &RawStoreEntry,
    secrets: &BTreeMap<String, SecretSpec>,
    p: &mut Problems,
) -> Option<StoreSpec> {
    let s: &RawStore = &entry.store;
    let k = |field: &str| format!("{key}.{field}");
    let alias = match &s.secret {
        None => {
            p.push(Problem::new(
                Some(entry.span.clone()),
                k("secret"),
                "missing: every [[store]] needs secret = \"<alias of a type = \\\"certificate\\\" secret>\"",
            ));
            None
        }
        Some(v) => match secrets.get(v.get_ref()) {
            Some(spec) if spec.kind == SecretKind::Certificate => Some(v.get_ref().clone()),
            Some(_) => {
                p.at(v, k("secret"), format!("secret \"{}\" is not a certificate; declare it with type = \"certificate\"", v.get_ref()));
                None
            }
            None => {
                p.at(
                    v,
                    k("secret"),
                    format!(
                        "unknown secret alias \"{}\"; declare it in [secrets]",
                        v.get_ref()
                    ),
                );
                None
            }
        },
    };
    let location = match s.location.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None => Some(StoreLocation::LocalMachine),
        Some((_, l)) if l.eq_ignore_ascii_case("LocalMachine") => Some(StoreLocation::LocalMachine),
        Some((_, l)) if l.eq_ignore_ascii_case("CurrentUser") => Some(StoreLocation::CurrentUser),
        Some((v, _)) => {
            p.at(
                v,
                k("location"),
                "expected \"LocalMachine\" or \"CurrentUser\"",
            );
            None
        }
    };
    let name = store_name(&s.name, &k("name"), p);
    let accounts = accounts(&s.accounts, &k("accounts"), p);
    let keep = match &s.keep {
        None => Some(DEFAULT_STORE_KEEP),
        Some(v) if (1..=MAX_STORE_KEEP).contains(v.get_ref()) => usize::try_from(*v.get_ref()).ok(),
        Some(v) => {
            p.at(v, k("keep"), format!("expected a number of versions from 1 to {MAX_STORE_KEEP} (1 keeps only the current one)"));
            None
        }
    };
    let friendly_name = match &s.friendly_name {
        Some(v) if v.get_ref().trim().is_empty() => {
            p.at(v, k("friendly_name"), "expected a name, found an empty string (omit the key for \"kvsync <alias> <notAfter>\")");
            None
        }
        other => other.as_ref().map(|v| v.get_ref().clone()),
    };
    let on_change = match &s.on_change {
        None => None,
        Some(v) => match hook_value(v.get_ref(), "no hook") {
            Ok(h) => Some(h),
            Err(msg) => {
                p.at(v, k("on_change"), msg);
                None
            }
        },
    };
    let rebind = s.rebind.as_ref().is_some_and(|v| *v.get_ref());
    if let (Some(v), Some(StoreLocation::CurrentUser)) = (&s.rebind, location) {
        if *v.get_ref() {
            p.at(v, k("rebind"), "http.sys binds certificates of LocalMachine stores only; use location = \"LocalMachine\" with rebind = true");
        }
    }
    Some(StoreSpec {
        alias: alias?,
        location: location?,
        name: name?,
        accounts: accounts?,
        keep: keep?,
        exportable: s.exportable.as_ref().is_some_and(|v| *v.get_ref()),
        friendly_name,
        on_change,
        rebind,
    })
}

/// `name`: default `My`; a plain store name, never a trust store.
fn store_name(v: &Option<Spanned<String>>, key: &str, p: &mut Problems) -> Option<String> {
    let Some(v) = v else {
        return Some("My".to_owned());
    };
    let name = v.get_ref().trim();
    if name.is_empty() || name.contains(['\\', '/']) {
        p.at(v, key, "expected a store name such as \"My\" or \"WebHosting\" (the location goes in location)");
        return None;
    }
    if let Some(bad) = FORBIDDEN_STORES
        .iter()
        .find(|b| b.eq_ignore_ascii_case(name))
    {
        p.at(v, key, format!("kvsync never puts a vault's certificate into the {bad} store (a trust anchor); use \"My\" or \"WebHosting\" (intermediates go to CA by themselves)"));
        return None;
    }
    Some(name.to_owned())
}

/// `accounts`: account names or SID strings, none empty.
fn accounts(v: &Option<Spanned<Vec<String>>>, key: &str, p: &mut Problems) -> Option<Vec<String>> {
    let Some(v) = v else {
        return Some(Vec::new());
    };
    if let Some(i) = v.get_ref().iter().position(|a| a.trim().is_empty()) {
        p.at(v, format!("{key}[{i}]"), "expected an account name (\"IIS AppPool\\\\Site\", \"NETWORK SERVICE\") or a SID string, found an empty string");
        return None;
    }
    Some(v.get_ref().clone())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{StoreLocation, parse};

    const BASE: &str = r#"
vault = "https://v.vault.azure.net"
[secrets]
site = { name = "site", type = "certificate" }
pw = "pw"
"#;

    fn errors(extra: &str) -> Vec<String> {
        match parse(&format!("{BASE}{extra}"), Path::new("/etc/kvsync/k.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// The table's own checks, without the Unix "Windows-only" error.
    fn checks(extra: &str) -> Vec<String> {
        let mut e = errors(extra);
        e.retain(|m| !m.contains("Windows-only key"));
        e
    }

    #[test]
    fn unix_rejects_store_naming_key_and_line() {
        if cfg!(windows) {
            return;
        }
        let e = errors("[[store]]\nsecret = \"site\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("/etc/kvsync/k.toml:6:1: store[0]: "),
            "{}",
            e[0]
        );
        assert!(e[0].contains("Windows-only key"), "{}", e[0]);
    }

    #[test]
    fn full_table_resolves() {
        let text = format!(
            "{BASE}[[store]]\nsecret = \"site\"\nlocation = \"currentuser\"\nname = \"WebHosting\"\naccounts = [\"IIS AppPool\\\\Site\", \"S-1-5-20\"]\nkeep = 3\nexportable = true\nfriendly_name = \"site cert\"\non_change = [\"powershell.exe\", \"-File\", \"x.ps1\"]\n"
        );
        let raw = crate::config::raw::parse(&text).0;
        let mut p = super::Problems::default();
        let secrets = {
            let c = parse(BASE, Path::new("/k.toml")).ok();
            c.map(|c| c.secrets).unwrap_or_default()
        };
        let stores = super::resolve_stores(&raw, &secrets, &mut p);
        assert_eq!(stores.len(), 1);
        let s = &stores[0];
        assert_eq!(s.location, StoreLocation::CurrentUser);
        assert_eq!(s.name, "WebHosting");
        assert_eq!(s.accounts, ["IIS AppPool\\Site", "S-1-5-20"]);
        assert_eq!((s.keep, s.exportable, s.rebind), (3, true, false));
        assert_eq!(s.friendly_name.as_deref(), Some("site cert"));
        assert_eq!(
            s.on_change.as_ref().map(ToString::to_string).as_deref(),
            Some(r#"["powershell.exe","-File","x.ps1"]"#)
        );
        assert_eq!(s.label(), "CurrentUser\\WebHosting");
    }

    #[test]
    fn defaults_are_local_machine_my_keep_two() {
        let text = format!("{BASE}[[store]]\nsecret = \"site\"\n");
        let raw = crate::config::raw::parse(&text).0;
        let mut p = super::Problems::default();
        let secrets = parse(BASE, Path::new("/k.toml"))
            .map(|c| c.secrets)
            .unwrap_or_default();
        let s = super::resolve_stores(&raw, &secrets, &mut p);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].location, s[0].name.as_str(), s[0].keep),
            (StoreLocation::LocalMachine, "My", 2)
        );
        assert!(!s[0].exportable && !s[0].rebind && s[0].accounts.is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let e = checks(
            "[[store]]\nsecret = \"pw\"\nlocation = \"Machine\"\nname = \"Root\"\nkeep = 0\naccounts = [\"\"]\nfriendly_name = \"\"\non_change = []\nbogus = 1\n",
        );
        let joined = e.join("\n");
        for want in [
            "store[0].secret: secret \"pw\" is not a certificate",
            "store[0].location: expected \"LocalMachine\" or \"CurrentUser\"",
            "store[0].name: kvsync never puts a vault's certificate into the Root store",
            "store[0].keep: expected a number of versions from 1 to 10",
            "store[0].accounts[0]: expected an account name",
            "store[0].friendly_name: expected a name",
            "store[0].on_change: expected a program as the first element",
            "store[0].bogus: unknown field",
        ] {
            assert!(joined.contains(want), "missing {want:?} in\n{joined}");
        }
    }

    #[test]
    fn rebind_needs_local_machine_and_duplicates_are_refused() {
        let e = checks("[[store]]\nsecret = \"site\"\nlocation = \"CurrentUser\"\nrebind = true\n[[store]]\nsecret = \"nope\"\n[[store]]\nsecret = \"site\"\nlocation = \"CurrentUser\"\nname = \"my\"\n").join("\n");
        assert!(
            e.contains("store[0].rebind: http.sys binds certificates of LocalMachine stores only"),
            "{e}"
        );
        assert!(
            e.contains("store[1].secret: unknown secret alias \"nope\""),
            "{e}"
        );
        assert!(
            e.contains("store[2]: store[0] already puts certificate \"site\" into CurrentUser\\my"),
            "{e}"
        );
    }
}
