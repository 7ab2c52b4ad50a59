//! The Key Vault secret store: names (case-insensitive) → versions, and the
//! JSON shapes Key Vault renders them in (PROTOCOL.md §5).
//!
//! Invariants: versions are 32 lowercase hex chars; the newest version of a
//! name is its "current" one (a GET without version returns it even when
//! disabled → 403, as Azure does); times are integer Unix seconds; optional
//! fields are omitted, never null. Pure data: no I/O, no auth.

use std::collections::BTreeMap;

use rand::RngCore as _;
use serde_json::{Map, Value, json};

use crate::state::unix_now;

/// Recovery settings of a soft-delete-enabled vault (Azure's default since
/// 2020: soft delete on, 90 days retention).
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const RECOVERABLE_DAYS: u64 = 90;

/// Optional properties of a new secret version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretOptions {
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub enabled: bool,
    /// `exp`, Unix seconds.
    pub expires: Option<i64>,
    /// `nbf`, Unix seconds.
    pub not_before: Option<i64>,
}

impl Default for SecretOptions {
    fn default() -> Self {
        Self {
            content_type: None,
            tags: None,
            enabled: true,
            expires: None,
            not_before: None,
        }
    }
}

/// One version of a secret.
#[derive(Clone)]
pub struct Version {
    pub version: String,
    pub value: String,
    pub opts: SecretOptions,
    pub created: u64,
    pub updated: u64,
    /// Set only on secrets that back a certificate (PROTOCOL.md §6): the
    /// key id; such secrets also render `"managed": true`.
    pub kid: Option<String>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .field("opts", &self.opts)
            .finish()
    }
}

/// All versions of one secret, oldest first.
#[derive(Debug, Clone)]
pub struct Secret {
    /// The name as first created (ids use it; lookups ignore case).
    pub name: String,
    pub versions: Vec<Version>,
}

impl Secret {
    pub fn current(&self) -> Option<&Version> {
        self.versions.last()
    }

    pub fn version(&self, version: &str) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| v.version.eq_ignore_ascii_case(version))
    }
}

/// Secrets keyed by lowercase name (so listing is in name order).
#[derive(Debug, Default)]
pub struct Store {
    secrets: BTreeMap<String, Secret>,
}

impl Store {
    /// Adds a new version (creating the secret if needed); returns its id.
    pub fn set(&mut self, name: &str, value: &str, opts: SecretOptions) -> String {
        let version = new_version_id();
        let now = unix_now();
        let entry = self
            .secrets
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Secret {
                name: name.to_owned(),
                versions: Vec::new(),
            });
        entry.versions.push(Version {
            version: version.clone(),
            value: value.to_owned(),
            opts,
            created: now,
            updated: now,
            kid: None,
        });
        version
    }

    /// Adds version `version` of a certificate's backing secret
    /// (PROTOCOL.md §6): same version id as the certificate, `kid` set, so
    /// it renders `"managed": true`.
    pub fn set_managed(
        &mut self,
        name: &str,
        version: &str,
        value: &str,
        opts: SecretOptions,
        kid: String,
    ) {
        let now = unix_now();
        self.secrets
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Secret {
                name: name.to_owned(),
                versions: Vec::new(),
            })
            .versions
            .push(Version {
                version: version.to_owned(),
                value: value.to_owned(),
                opts,
                created: now,
                updated: now,
                kid: Some(kid),
            });
    }

    /// Replaces the value of one version in place (used to strip the key of
    /// a certificate made non-exportable). False if there is no such version.
    pub fn replace_value(&mut self, name: &str, version: &str, value: &str) -> bool {
        let Some(v) = self
            .secrets
            .get_mut(&name.to_ascii_lowercase())
            .and_then(|s| s.versions.iter_mut().find(|v| v.version == version))
        else {
            return false;
        };
        v.value = value.to_owned();
        v.updated = unix_now();
        true
    }

    /// Enables/disables one version. Returns false if there is no such version.
    pub fn set_enabled(&mut self, name: &str, version: &str, enabled: bool) -> bool {
        let Some(secret) = self.secrets.get_mut(&name.to_ascii_lowercase()) else {
            return false;
        };
        let Some(v) = secret
            .versions
            .iter_mut()
            .find(|v| v.version.eq_ignore_ascii_case(version))
        else {
            return false;
        };
        v.opts.enabled = enabled;
        v.updated = unix_now();
        true
    }

    /// Removes a secret and all its versions. Returns whether it existed.
    pub fn delete(&mut self, name: &str) -> bool {
        self.secrets.remove(&name.to_ascii_lowercase()).is_some()
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(&name.to_ascii_lowercase())
    }

    /// Up to `max` secrets whose lowercase name sorts after `after`, and
    /// whether more follow.
    pub fn page_after(&self, after: Option<&str>, max: usize) -> (Vec<&Secret>, bool) {
        let iter: Box<dyn Iterator<Item = &Secret>> = match after {
            None => Box::new(self.secrets.values()),
            Some(after) => Box::new(
                self.secrets
                    .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .map(|(_, s)| s),
            ),
        };
        let mut items: Vec<&Secret> = iter.take(max + 1).collect();
        let more = items.len() > max;
        items.truncate(max);
        (items, more)
    }
}

/// A new version id: 32 lowercase hex chars (PROTOCOL.md §5).
pub fn new_version_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `attributes` object of a version.
pub fn attributes_json(v: &Version) -> Value {
    let mut a = Map::new();
    a.insert("enabled".into(), json!(v.opts.enabled));
    if let Some(nbf) = v.opts.not_before {
        a.insert("nbf".into(), json!(nbf));
    }
    if let Some(exp) = v.opts.expires {
        a.insert("exp".into(), json!(exp));
    }
    a.insert("created".into(), json!(v.created));
    a.insert("updated".into(), json!(v.updated));
    a.insert("recoveryLevel".into(), json!(RECOVERY_LEVEL));
    a.insert("recoverableDays".into(), json!(RECOVERABLE_DAYS));
    Value::Object(a)
}

/// A list item (no value): `id`, `attributes`, `contentType`/`tags` when set,
/// `managed` for certificate-backed secrets.
pub fn item_json(id: String, v: &Version) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("attributes".into(), attributes_json(v));
    if let Some(ct) = &v.opts.content_type {
        m.insert("contentType".into(), json!(ct));
    }
    if let Some(tags) = &v.opts.tags {
        m.insert("tags".into(), json!(tags));
    }
    if v.kid.is_some() {
        m.insert("managed".into(), json!(true));
    }
    m
}

/// The full secret bundle of `GET /secrets/{name}[/{version}]`.
pub fn bundle_json(base: &str, secret: &Secret, v: &Version) -> Value {
    let id = format!("{base}/secrets/{}/{}", secret.name, v.version);
    let mut m = item_json(id, v);
    m.insert("value".into(), json!(v.value));
    if let Some(kid) = &v.kid {
        m.insert("kid".into(), json!(kid));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_versions_hex() {
        let mut s = Store::default();
        let v1 = s.set("Db-Password", "a", SecretOptions::default());
        let v2 = s.set("db-password", "b", SecretOptions::default());
        assert_eq!(v1.len(), 32);
        assert!(
            v1.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let secret = s.get("DB-PASSWORD").unwrap();
        assert_eq!(secret.name, "Db-Password");
        assert_eq!(secret.current().unwrap().version, v2);
        assert_eq!(secret.version(&v1).unwrap().value, "a");
    }

    #[test]
    fn bundle_omits_absent_optionals() {
        let mut s = Store::default();
        s.set("n", "v", SecretOptions::default());
        let secret = s.get("n").unwrap();
        let b = bundle_json("https://x", secret, secret.current().unwrap());
        assert!(b.get("contentType").is_none());
        assert!(b.get("tags").is_none());
        assert!(b["attributes"].get("exp").is_none());
        assert_eq!(b["attributes"]["recoverableDays"], 90);
    }

    #[test]
    fn paging_walks_all_names() {
        let mut s = Store::default();
        for i in 0..7 {
            s.set(&format!("s{i}"), "v", SecretOptions::default());
        }
        let (p1, more) = s.page_after(None, 3);
        assert!(more);
        let last = p1.last().unwrap().name.to_ascii_lowercase();
        let (p2, _) = s.page_after(Some(&last), 3);
        assert_eq!(p2[0].name, "s3");
        let (p3, more) = s.page_after(Some("s5"), 3);
        assert_eq!(p3.len(), 1);
        assert!(!more);
    }
}
