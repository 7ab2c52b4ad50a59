//! The objects a round reads without a secret GET of their own alias:
//! `[selections]` (the vault's secret list, filtered by prefix, tags and
//! `enabled`, then a GET per secret whose `updated` moved since it was last
//! fetched), `type = "key"` (the JWK of `GET /keys`) and `public_only`
//! certificates (the leaf of `GET /certificates`).
//!
//! Invariants:
//! * a selection costs one list request per 25 secrets of its vault per
//!   round (one list per vault, shared by its selections), plus one GET per
//!   secret that is new or changed; an unchanged round makes list requests
//!   only (same [`CHANGE_MARGIN_SECS`] rule as change detection);
//! * disabled secrets are never selected; a selection that matches nothing
//!   is logged once (info), not an error;
//! * a forbidden list is an error naming the permission a selection needs;
//! * no private key material is requested for keys or certificates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use futures::StreamExt as _;
use url::Url;

use super::changes::CHANGE_MARGIN_SECS;
use super::{Engine, SyncError, unix_now};
use crate::config::{SecretKind, SecretSpec, SelectionSpec, selection_matches};
use crate::identity::IdentityError;
use crate::render::{self, KeyMaterial, Selected};
use crate::vault::{SecretBundle, SecretListItem, VaultError};

/// Whether a spec is read through a secret GET of its own (the secret
/// itself, or a certificate with its key).
pub fn reads_secret(spec: &SecretSpec) -> bool {
    match spec.kind {
        SecretKind::Secret => true,
        SecretKind::Certificate => !spec.public_only,
        SecretKind::Key => false,
    }
}

#[derive(Default)]
struct State {
    /// (vault URL, lowercase name) → bundle and when it was fetched.
    bundles: HashMap<(String, String), (SecretBundle, i64)>,
    /// Selections whose "matched nothing" was logged.
    empty_logged: HashSet<String>,
}

/// Bundles of selected secrets kept across the agent's rounds.
#[derive(Default)]
pub struct SelectionCache {
    state: Mutex<State>,
}

impl SelectionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A selected secret still to be read: (selection, display name, vault,
/// listed name).
type Pending = (String, String, Url, SecretListItem);

impl Engine {
    /// Read keys, public-only certificates and selections into `ctx`;
    /// failures go to `errors` under the alias (`selections.<alias>` for a
    /// selection).
    pub(super) async fn fetch_extras(
        &self,
        ctx: &mut render::Context,
        errors: &mut Vec<SyncError>,
        cache: &SelectionCache,
    ) {
        self.fetch_objects(ctx, errors).await;
        self.fetch_selections(ctx, errors, cache).await;
    }

    fn vault_of(
        &self,
        vault: &crate::config::VaultRef,
        ctx: &render::Context,
    ) -> Result<Url, VaultError> {
        vault
            .resolve(ctx.instance.as_ref(), self.config.auth.audience.as_deref())
            .map_err(|e| {
                VaultError::Identity(IdentityError::Other(format!(
                    "cannot resolve the vault URL: {e}"
                )))
            })
    }

    async fn fetch_objects(&self, ctx: &mut render::Context, errors: &mut Vec<SyncError>) {
        let specs: Vec<&SecretSpec> = self
            .config
            .secrets
            .values()
            .filter(|s| !reads_secret(s))
            .collect();
        for spec in specs {
            let url = match self.vault_of(&spec.vault, ctx) {
                Ok(u) => u,
                Err(error) => {
                    errors.push(SyncError::Fetch {
                        alias: spec.alias.clone(),
                        error,
                    });
                    continue;
                }
            };
            let version = spec.version.as_deref();
            match spec.kind {
                SecretKind::Key => match self.vault.get_key(&url, &spec.name, version).await {
                    Ok(k) => match crate::certs::public_key_from_jwk(&k.jwk) {
                        Ok(key) => {
                            let kid = k
                                .jwk
                                .get("kid")
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                                .to_owned();
                            ctx.keys
                                .insert(spec.alias.clone(), KeyMaterial { kid, key });
                        }
                        Err(detail) => errors.push(SyncError::Fetch {
                            alias: spec.alias.clone(),
                            error: VaultError::Malformed {
                                vault: crate::vault::vault_label(&url),
                                detail: format!("key '{}': {detail}", spec.name),
                            },
                        }),
                    },
                    Err(error) => errors.push(SyncError::Fetch {
                        alias: spec.alias.clone(),
                        error,
                    }),
                },
                _ => match self.vault.get_certificate(&url, &spec.name, version).await {
                    Ok(c) => match crate::certs::from_cer(&c.cer) {
                        Ok(m) => {
                            ctx.certs.insert(spec.alias.clone(), m);
                        }
                        Err(e) => errors.push(SyncError::Fetch {
                            alias: spec.alias.clone(),
                            error: VaultError::Malformed {
                                vault: crate::vault::vault_label(&url),
                                detail: format!("certificate '{}': {e}", spec.name),
                            },
                        }),
                    },
                    Err(error) => errors.push(SyncError::Fetch {
                        alias: spec.alias.clone(),
                        error,
                    }),
                },
            }
        }
    }

    async fn fetch_selections(
        &self,
        ctx: &mut render::Context,
        errors: &mut Vec<SyncError>,
        cache: &SelectionCache,
    ) {
        if self.config.selections.is_empty() {
            return;
        }
        // One list per vault per round; `None` when it failed (reported
        // once, under the first selection that needed it).
        let mut lists: BTreeMap<Url, Option<Vec<SecretListItem>>> = BTreeMap::new();
        let mut pending: Vec<Pending> = Vec::new();
        for spec in self.config.selections.values() {
            let url = match self.vault_of(&spec.vault, ctx) {
                Ok(u) => u,
                Err(error) => {
                    errors.push(SyncError::Selection {
                        alias: spec.alias.clone(),
                        error,
                    });
                    continue;
                }
            };
            if !lists.contains_key(&url) {
                let listed = match self.vault.list_secrets(&url).await {
                    Ok(items) => Some(items),
                    Err(e) => {
                        errors.push(SyncError::Selection {
                            alias: spec.alias.clone(),
                            error: selection_error(spec, e),
                        });
                        None
                    }
                };
                lists.insert(url.clone(), listed);
            }
            let Some(Some(items)) = lists.get(&url) else {
                continue;
            };
            let matched = matching(spec, items);
            if matched.is_empty() && cache.lock().empty_logged.insert(spec.alias.clone()) {
                tracing::info!(selection = %spec.alias, prefix = %spec.prefix, "selection matches no enabled secret");
            }
            ctx.selected.insert(spec.alias.clone(), Vec::new());
            pending.extend(
                matched
                    .into_iter()
                    .map(|(name, item)| (spec.alias.clone(), name, url.clone(), item)),
            );
        }
        self.read_selected(pending, ctx, errors, cache).await;
        for list in ctx.selected.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }

    /// Reuse or GET every selected secret, at most `[agent] concurrency`
    /// GETs at once; a failed GET fails its selection (which then is left
    /// out of the context: its files keep their contents).
    async fn read_selected(
        &self,
        pending: Vec<Pending>,
        ctx: &mut render::Context,
        errors: &mut Vec<SyncError>,
        cache: &SelectionCache,
    ) {
        let mut to_get = Vec::new();
        {
            let state = cache.lock();
            for (alias, name, url, item) in pending {
                let key = (url.as_str().to_owned(), item.name.to_ascii_lowercase());
                match state.bundles.get(&key) {
                    Some((b, fetched_at)) if unchanged(b, *fetched_at, &item) => {
                        if let Some(list) = ctx.selected.get_mut(&alias) {
                            list.push(Selected {
                                name,
                                bundle: b.clone(),
                            });
                        }
                    }
                    _ => to_get.push((alias, name, url, item)),
                }
            }
        }
        let concurrency = self.config.agent.concurrency.max(1);
        let got: Vec<_> = futures::stream::iter(to_get)
            .map(|(alias, name, url, item)| async move {
                let r = self.vault.get_secret(&url, &item.name, None).await;
                (alias, name, url, item, r)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut failed: Vec<String> = Vec::new();
        for (alias, name, url, item, r) in got {
            match r {
                Ok(bundle) => {
                    let key = (url.as_str().to_owned(), item.name.to_ascii_lowercase());
                    cache
                        .lock()
                        .bundles
                        .insert(key, (bundle.clone(), unix_now()));
                    if let Some(list) = ctx.selected.get_mut(&alias) {
                        list.push(Selected { name, bundle });
                    }
                }
                Err(e) => {
                    if !failed.contains(&alias) {
                        failed.push(alias.clone());
                    }
                    errors.push(SyncError::Selection {
                        alias: alias.clone(),
                        error: e,
                    });
                }
            }
        }
        for alias in failed {
            ctx.selected.remove(&alias);
        }
    }
}

/// The listed secrets `spec` selects, with the names shown to templates.
fn matching(spec: &SelectionSpec, items: &[SecretListItem]) -> Vec<(String, SecretListItem)> {
    items
        .iter()
        .filter(|i| selection_matches(spec, &i.name, i.enabled, &i.tags))
        .map(|i| {
            let name = if spec.strip_prefix {
                i.name
                    .get(spec.prefix.len()..)
                    .unwrap_or_default()
                    .to_owned()
            } else {
                i.name.clone()
            };
            (name, i.clone())
        })
        .collect()
}

/// The cached bundle is the listed version, and that is certain.
fn unchanged(b: &SecretBundle, fetched_at: i64, item: &SecretListItem) -> bool {
    match (item.updated, b.updated) {
        (Some(listed), Some(held)) => {
            listed == held && b.enabled && fetched_at > held + CHANGE_MARGIN_SECS
        }
        _ => false,
    }
}

fn selection_error(spec: &SelectionSpec, e: VaultError) -> VaultError {
    match e {
        VaultError::ListForbidden {
            vault,
            code,
            identity,
        } => VaultError::SelectionForbidden {
            vault,
            selection: spec.alias.clone(),
            code,
            identity,
        },
        other => other,
    }
}
