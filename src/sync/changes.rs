//! Change detection for the agent's rounds (PROTOCOL.md §5 "List"): keep the
//! last good [`SecretBundle`] of every alias and, when the identity may list
//! the vault's secrets, use the paged list (25 secrets per request, no
//! values) to GET only the secrets whose `updated` time or `enabled` flag
//! moved since they were fetched. A fleet of hosts polling hundreds of
//! secrets then costs a few list pages per round instead of one GET each.
//!
//! Invariants:
//! * a rotation is seen by the next list (a new version has a new `updated`);
//!   a secret absent from the list is a failure for its alias, like a 404;
//! * a bundle is reused only if its `updated` is certain (see
//!   [`CHANGE_MARGIN_SECS`]); pinned versions are never fetched twice while
//!   the secret is listed;
//! * a failed GET forgets the alias's bundle (the next round GETs it again);
//! * when listing is forbidden, every secret is fetched with its own GET
//!   (the behaviour without this module), logged once at info, and listing
//!   is tried again after [`LIST_RECHECK`];
//! * nothing here logs or copies a secret value except the in-memory clone a
//!   reused bundle needs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use url::Url;

use super::{Engine, Job, SyncError, unix_now};
use crate::config::SecretSpec;
use crate::render;
use crate::vault::{LIST_PAGE_SIZE, SecretBundle, SecretListItem, VaultError, vault_label};

/// `updated` is whole Unix seconds, so a version created in the same second
/// as the one we fetched carries the same `updated`. A bundle fetched more
/// than this many seconds after its `updated` cannot have raced a newer
/// version of that second (1 s of granularity + 1 s of host/vault clock
/// skew); a younger one is fetched once more before it is trusted.
pub const CHANGE_MARGIN_SECS: i64 = 2;

/// How long a vault stays on per-secret GETs after listing was forbidden or
/// not worth it (a role assignment may be added meanwhile). One list attempt
/// per hour is negligible next to the GETs it may save.
pub const LIST_RECHECK: Duration = Duration::from_secs(3600);

/// What a round does for one alias.
pub enum Plan {
    /// The cached bundle is current.
    Reuse(SecretBundle),
    /// GET it.
    Get,
    /// The secret is gone from the vault's list.
    Gone(VaultError),
}

struct Cached {
    bundle: SecretBundle,
    /// What the bundle was fetched for (a reloaded config may change it).
    key: (String, String, Option<String>),
    /// Host clock (Unix seconds) when the GET answered.
    fetched_at: i64,
}

#[derive(Default)]
struct State {
    bundles: HashMap<String, Cached>,
    /// Vault URL → until when listing is not tried.
    no_list: HashMap<String, Instant>,
    /// Vaults whose "listing forbidden" was already logged at info.
    forbidden_logged: HashSet<String>,
}

/// Last good bundles and per-vault listing decisions, kept across rounds.
/// The lock is never held across an `.await`.
#[derive(Default)]
pub struct ChangeCache {
    state: Mutex<State>,
}

fn spec_key(spec: &SecretSpec, vault: &Url) -> (String, String, Option<String>) {
    (
        vault.as_str().to_owned(),
        spec.name.to_ascii_lowercase(),
        spec.version.clone(),
    )
}

impl ChangeCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (each update is a single insert/remove): keep using them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this round should list `vault` for `specs`: only when some of
    /// them have a bundle to reuse and listing is not switched off.
    pub fn should_list(&self, vault: &Url, specs: &[&SecretSpec]) -> bool {
        let state = self.lock();
        if let Some(until) = state.no_list.get(vault.as_str()) {
            if Instant::now() < *until {
                return false;
            }
        }
        specs.iter().any(|s| {
            state
                .bundles
                .get(&s.alias)
                .is_some_and(|c| c.key == spec_key(s, vault))
        })
    }

    /// Record a failed list: forbidden switches listing off for a while
    /// (logged once at info); anything else only costs this round.
    pub fn list_failed(&self, vault: &Url, error: &VaultError) {
        let label = vault_label(vault);
        let mut state = self.lock();
        if let VaultError::ListForbidden { .. } = error {
            state
                .no_list
                .insert(vault.as_str().to_owned(), Instant::now() + LIST_RECHECK);
            if state.forbidden_logged.insert(vault.as_str().to_owned()) {
                tracing::info!(
                    vault = %label,
                    "this identity may not list the vault's secrets; checking each secret with its own GET (grant secret List for cheaper change detection)"
                );
                return;
            }
        }
        tracing::debug!(vault = %label, error = %error, "listing failed; fetching each secret this round");
    }

    /// After a successful list: when its pages cost as many requests as
    /// GETting every secret would, stop listing this vault for a while.
    pub fn listed(&self, vault: &Url, items: usize, specs: usize) {
        let pages = items.div_ceil(LIST_PAGE_SIZE as usize).max(1);
        if pages >= specs {
            tracing::debug!(vault = %vault_label(vault), pages, specs, "listing is not cheaper than GETs; not listing for a while");
            self.lock()
                .no_list
                .insert(vault.as_str().to_owned(), Instant::now() + LIST_RECHECK);
        }
    }

    /// Decide for one alias. `listed` is the vault's list by lowercase
    /// name, or `None` when the vault was not listed this round.
    pub fn plan(
        &self,
        spec: &SecretSpec,
        vault: &Url,
        listed: Option<&HashMap<String, SecretListItem>>,
    ) -> Plan {
        let Some(listed) = listed else {
            return Plan::Get;
        };
        let key = spec_key(spec, vault);
        let mut state = self.lock();
        let Some(item) = listed.get(&key.1) else {
            state.bundles.remove(&spec.alias);
            return Plan::Gone(VaultError::NotFound {
                vault: vault_label(vault),
                secret: spec.name.clone(),
                version: spec
                    .version
                    .as_ref()
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default(),
                code: "SecretNotFound (absent from the vault's list)".to_owned(),
            });
        };
        match state.bundles.get(&spec.alias) {
            Some(c) if c.key == key && (spec.version.is_some() || unchanged(c, item)) => {
                Plan::Reuse(c.bundle.clone())
            }
            _ => Plan::Get,
        }
    }

    /// Remember a bundle a GET just returned.
    pub fn store(&self, spec: &SecretSpec, vault: &Url, bundle: &SecretBundle) {
        let cached = Cached {
            bundle: bundle.clone(),
            key: spec_key(spec, vault),
            fetched_at: unix_now(),
        };
        self.lock().bundles.insert(spec.alias.clone(), cached);
    }

    /// Forget an alias whose GET failed.
    pub fn forget(&self, alias: &str) {
        self.lock().bundles.remove(alias);
    }

    /// Keep only the bundles of the aliases `keep` accepts (after a reload:
    /// the secrets still declared).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().bundles.retain(|alias, _| keep(alias));
    }
}

impl Engine {
    /// Fetch every declared secret (instance metadata first when used),
    /// at most `[agent] concurrency` GETs at once, reusing the bundles of
    /// earlier rounds in `changes` and GETting only what each vault's list
    /// shows as changed (with an empty cache: everything); a secret absent
    /// from the list fails like a 404. The context holds what succeeded
    /// (certificates are added later), the list the failures, by alias.
    pub(crate) async fn fetch(&self, changes: &ChangeCache) -> (render::Context, Vec<SyncError>) {
        let (instance, jobs, mut errors) = self.resolve_vaults().await;
        let mut by_vault: BTreeMap<Url, Vec<&SecretSpec>> = BTreeMap::new();
        for (spec, url) in jobs {
            by_vault.entry(url).or_default().push(spec);
        }
        let mut ctx = render::Context {
            instance,
            ..render::Context::default()
        };
        let mut to_get: Vec<Job<'_>> = Vec::new();
        let mut reused = 0usize;
        for (vault, specs) in by_vault {
            let listed = list_for(self, changes, &vault, &specs).await;
            for spec in specs {
                match changes.plan(spec, &vault, listed.as_ref()) {
                    Plan::Reuse(bundle) => {
                        reused += 1;
                        ctx.secrets.insert(spec.alias.clone(), bundle);
                    }
                    Plan::Get => to_get.push((spec, vault.clone())),
                    Plan::Gone(error) => errors.push(SyncError::Fetch {
                        alias: spec.alias.clone(),
                        error,
                    }),
                }
            }
        }
        tracing::debug!(reused, fetching = to_get.len(), "change detection");
        for ((spec, url), result) in self.get_many(to_get).await {
            match result {
                Ok(bundle) => {
                    changes.store(spec, &url, &bundle);
                    ctx.secrets.insert(spec.alias.clone(), bundle);
                }
                Err(error) => {
                    changes.forget(&spec.alias);
                    errors.push(SyncError::Fetch {
                        alias: spec.alias.clone(),
                        error,
                    });
                }
            }
        }
        self.fill_optional(&mut ctx, &mut errors);
        // One order whatever the GETs' completion order (alias order).
        errors.sort_by_cached_key(ToString::to_string);
        (ctx, errors)
    }
}

/// The list of `vault` by lowercase name, when it is worth listing this
/// round for `specs` and listing succeeds.
async fn list_for(
    engine: &Engine,
    changes: &ChangeCache,
    vault: &Url,
    specs: &[&SecretSpec],
) -> Option<HashMap<String, SecretListItem>> {
    if !changes.should_list(vault, specs) {
        return None;
    }
    match engine.vault.list_secrets(vault).await {
        Ok(items) => {
            changes.listed(vault, items.len(), specs.len());
            Some(
                items
                    .into_iter()
                    .map(|i| (i.name.to_ascii_lowercase(), i))
                    .collect(),
            )
        }
        Err(e) => {
            changes.list_failed(vault, &e);
            None
        }
    }
}

/// The list entry describes the version we hold, and that is certain.
fn unchanged(cached: &Cached, item: &SecretListItem) -> bool {
    let b = &cached.bundle;
    match (item.updated, b.updated) {
        (Some(listed), Some(held)) => {
            listed == held
                && item.enabled == b.enabled
                && cached.fetched_at > held + CHANGE_MARGIN_SECS
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{SecretKind, VaultRef};
    use secrecy::SecretString;

    const UPDATED: i64 = 1_700_000_000;

    fn vault() -> Url {
        Url::parse("https://v.vault.azure.net/").unwrap()
    }

    fn spec(version: Option<&str>) -> SecretSpec {
        SecretSpec {
            alias: "db".into(),
            name: "DB-Password".into(),
            version: version.map(str::to_owned),
            vault: VaultRef::Url(vault()),
            kind: SecretKind::Secret,
            include_root: false,
            optional: false,
            default: String::new(),
            public_only: false,
        }
    }

    fn bundle(updated: i64) -> SecretBundle {
        SecretBundle {
            value: SecretString::from("v1"),
            name: "db-password".into(),
            version: "0".repeat(32),
            id: "https://v.vault.azure.net/secrets/db-password/x".into(),
            content_type: None,
            tags: Default::default(),
            enabled: true,
            created: Some(updated),
            updated: Some(updated),
            not_before: None,
            expires: None,
            kid: None,
            managed: false,
        }
    }

    fn listed(updated: i64, enabled: bool) -> HashMap<String, SecretListItem> {
        let item = SecretListItem {
            name: "db-password".into(),
            updated: Some(updated),
            enabled,
            content_type: None,
            tags: Default::default(),
        };
        HashMap::from([(item.name.clone(), item)])
    }

    /// A cache holding `bundle(UPDATED)` fetched at `fetched_at`.
    fn cache(s: &SecretSpec, fetched_at: i64) -> ChangeCache {
        let c = ChangeCache::default();
        c.store(s, &vault(), &bundle(UPDATED));
        c.lock().bundles.get_mut("db").unwrap().fetched_at = fetched_at;
        c
    }

    fn is_reuse(p: &Plan) -> bool {
        matches!(p, Plan::Reuse(_))
    }

    #[test]
    fn an_unchanged_entry_fetched_well_after_its_update_is_reused() {
        let s = spec(None);
        let c = cache(&s, UPDATED + CHANGE_MARGIN_SECS + 1);
        assert!(c.should_list(&vault(), &[&s]));
        assert!(is_reuse(&c.plan(
            &s,
            &vault(),
            Some(&listed(UPDATED, true))
        )));
    }

    #[test]
    fn a_bundle_fetched_in_the_second_of_its_update_is_fetched_again() {
        let s = spec(None);
        let c = cache(&s, UPDATED + CHANGE_MARGIN_SECS);
        assert!(matches!(
            c.plan(&s, &vault(), Some(&listed(UPDATED, true))),
            Plan::Get
        ));
    }

    #[test]
    fn a_new_update_time_or_a_disabled_entry_is_fetched() {
        let s = spec(None);
        let c = cache(&s, UPDATED + 100);
        let rotated = c.plan(&s, &vault(), Some(&listed(UPDATED + 50, true)));
        assert!(matches!(rotated, Plan::Get));
        let disabled = c.plan(&s, &vault(), Some(&listed(UPDATED, false)));
        assert!(matches!(disabled, Plan::Get));
        assert!(matches!(c.plan(&s, &vault(), None), Plan::Get), "no list");
    }

    #[test]
    fn an_entry_absent_from_the_list_is_gone_and_forgotten() {
        let s = spec(None);
        let c = cache(&s, UPDATED + 100);
        match c.plan(&s, &vault(), Some(&HashMap::new())) {
            Plan::Gone(e) => assert!(e.to_string().contains("not found"), "{e}"),
            _ => panic!("expected Gone"),
        }
        assert!(!c.should_list(&vault(), &[&s]), "nothing cached any more");
    }

    #[test]
    fn a_pinned_version_is_reused_while_listed_whatever_the_latest_is() {
        let s = spec(Some(&"a".repeat(32)));
        let c = cache(&s, UPDATED);
        let p = c.plan(&s, &vault(), Some(&listed(UPDATED + 999, true)));
        assert!(is_reuse(&p));
    }

    #[test]
    fn forbidden_listing_is_remembered_and_cheap_lists_continue() {
        let s = spec(None);
        let c = cache(&s, UPDATED + 100);
        c.listed(&vault(), 3, 10);
        assert!(c.should_list(&vault(), &[&s]), "1 page for 10 secrets");
        c.listed(&vault(), 30, 2);
        assert!(!c.should_list(&vault(), &[&s]), "2 pages for 2 secrets");

        let c = cache(&s, UPDATED + 100);
        let e = VaultError::ListForbidden {
            vault: "v".into(),
            code: "ForbiddenByRbac".into(),
            identity: "x".into(),
        };
        c.list_failed(&vault(), &e);
        assert!(!c.should_list(&vault(), &[&s]));
        let c = cache(&s, UPDATED + 100);
        let transient = VaultError::Throttled { vault: "v".into() };
        c.list_failed(&vault(), &transient);
        assert!(
            c.should_list(&vault(), &[&s]),
            "a transient failure costs one round"
        );
    }
}
