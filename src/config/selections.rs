//! Stage two for `[selections]`: many secrets chosen by rule (name prefix,
//! tags, vault) instead of one alias each, and the rule itself
//! ([`matches`]), which the sync round applies to the vault's secret list.

use std::collections::BTreeMap;

use super::raw::{RawConfig, RawSelectionEntry};
use super::resolve::{DefaultVault, Problems, is_identifier, vault_ref};
use super::{AuthConfig, SelectionSpec};

/// Resolve every `[selections]` entry.
pub(super) fn resolve_selections(
    raw: &RawConfig,
    default: &DefaultVault,
    auth: &AuthConfig,
    p: &mut Problems,
) -> BTreeMap<String, SelectionSpec> {
    let mut out = BTreeMap::new();
    for entry in &raw.selections {
        if let Some(spec) = selection(entry, default, auth, p) {
            out.insert(spec.alias.clone(), spec);
        }
    }
    out
}

fn selection(
    entry: &RawSelectionEntry,
    default: &DefaultVault,
    auth: &AuthConfig,
    p: &mut Problems,
) -> Option<SelectionSpec> {
    let alias = entry.alias.get_ref();
    let key = format!("selections.{alias}");
    let s = &entry.selection;
    if !is_identifier(alias) {
        p.at(&entry.alias, &key, "an alias must be an identifier usable in templates: letters, digits and _, not starting with a digit");
    }
    let prefix = match &s.prefix {
        Some(v)
            if !v
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            p.at(
                v,
                format!("{key}.prefix"),
                "expected the start of a Key Vault object name: letters, digits and dashes",
            );
            None
        }
        Some(v) => Some(v.get_ref().clone()),
        None => Some(String::new()),
    };
    let tags = s
        .tags
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.get_ref().clone()))
        .collect();
    let strip_prefix = s.strip_prefix.as_ref().is_some_and(|v| *v.get_ref());
    if let (Some(v), Some("")) = (&s.strip_prefix, prefix.as_deref())
        && *v.get_ref()
    {
        p.at(
            v,
            format!("{key}.strip_prefix"),
            "strip_prefix needs a prefix to strip: set prefix = \"...\", or remove it",
        );
    }
    let vault = match &s.vault {
        Some(v) => vault_ref(v, &format!("{key}.vault"), auth, p),
        None if !default.declared => {
            p.at(
                &entry.alias,
                &key,
                "no vault: set vault = \"https://...\" on this selection, or a top-level default vault",
            );
            None
        }
        None => default.url.clone(),
    };
    Some(SelectionSpec {
        alias: alias.clone(),
        prefix: prefix?,
        tags,
        vault: vault?,
        strip_prefix,
    })
}

/// Whether a listed secret belongs to `spec`: enabled, its name starts with
/// the prefix (names are case-insensitive), and every tag of the rule is
/// present with exactly that value.
pub fn matches(
    spec: &SelectionSpec,
    name: &str,
    enabled: bool,
    tags: &BTreeMap<String, String>,
) -> bool {
    enabled
        && name
            .get(..spec.prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(&spec.prefix))
        && spec.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::VaultRef;

    #[test]
    fn prefix_tags_and_enabled() {
        let spec = SelectionSpec {
            alias: "web".into(),
            prefix: "web-".into(),
            tags: BTreeMap::from([("app".into(), "web".into())]),
            vault: VaultRef::Url(url::Url::parse("https://v.vault.azure.net").unwrap()),
            strip_prefix: false,
        };
        let tagged = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        assert!(matches(&spec, "web-db", true, &tagged));
        assert!(matches(&spec, "WEB-db", true, &tagged));
        assert!(!matches(&spec, "web-db", false, &tagged));
        assert!(!matches(&spec, "api-db", true, &tagged));
        assert!(!matches(&spec, "web", true, &tagged));
        assert!(!matches(&spec, "web-db", true, &BTreeMap::new()));
        let other = BTreeMap::from([("app".to_owned(), "Web".to_owned())]);
        assert!(!matches(&spec, "web-db", true, &other));
    }
}
