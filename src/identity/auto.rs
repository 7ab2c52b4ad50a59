//! `method = "auto"`: pick the first usable source in the SPEC.md order —
//! Azure Arc HIMDS (`IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` set, `[auth]
//! identity_endpoint` set, or the Arc agent installed), then Azure IMDS (a
//! short probe: any HTTP answer means present), then Kubernetes workload
//! identity (`AZURE_FEDERATED_TOKEN_FILE` set).
//!
//! Invariants: when nothing is usable the error lists every source tried and
//! why it was not usable, one line each; a successful choice is made once
//! and kept ([`AutoSource`]), a failed one is retried on the next token
//! request (IMDS may come up later at boot). Arc has only the
//! system-assigned identity: a configured selector with Arc is an error,
//! never silently ignored.
//!
//! On AKS, pods can often reach the node's IMDS: set `method =
//! "workload-identity"` there so the pod's own identity is used.

use std::sync::Arc;

use super::arc::ArcSource;
use super::imds::{self, ImdsSource};
use super::workload::WorkloadSource;
use super::{AccessToken, IdentityError, SourceInfo, TokenSource};
use crate::config::AuthConfig;
use crate::env::Env;

/// The HTTP clients sources are built with.
#[derive(Clone)]
pub struct Clients {
    /// Plain HTTP to HIMDS/IMDS, never proxied.
    pub metadata: reqwest::Client,
    /// HTTPS to Entra (and Key Vault), proxy and CAs from the environment.
    pub remote: reqwest::Client,
    /// The IMDS presence probe (connect timeout ≤ 1 s), never proxied.
    pub probe: reqwest::Client,
}

/// `Ok` when Arc is detectable on this host, else why not.
pub fn arc_detected(auth: &AuthConfig, env: &Env) -> Result<(), String> {
    if auth.identity_endpoint.is_some() {
        return Ok(());
    }
    if env.var("IDENTITY_ENDPOINT").is_some() && env.var("IMDS_ENDPOINT").is_some() {
        return Ok(());
    }
    if env.arc_agent_installed() {
        return Ok(());
    }
    Err(format!(
        "IDENTITY_ENDPOINT and IMDS_ENDPOINT are not both set, [auth] identity_endpoint is not set, and the Arc agent is not installed ({} not found)",
        env.arc_agent_binary.display()
    ))
}

/// The Arc source, refusing user-assigned selectors (Arc has none).
pub fn arc_source(
    auth: &AuthConfig,
    env: &Env,
    http: reqwest::Client,
) -> Result<ArcSource, IdentityError> {
    if auth.user_assigned.is_some() {
        return Err(IdentityError::Config(
            "Azure Arc has only the system-assigned identity: remove [auth] client_id/object_id/resource_id, or set method = \"imds\" or \"workload-identity\"".to_owned(),
        ));
    }
    ArcSource::from_config(auth, env, http)
}

/// Try the sources in order; the first usable one wins.
pub async fn resolve(
    auth: &AuthConfig,
    env: &Env,
    clients: &Clients,
) -> Result<Arc<dyn TokenSource>, IdentityError> {
    let mut why = Vec::new();
    match arc_detected(auth, env) {
        Ok(()) => return Ok(Arc::new(arc_source(auth, env, clients.metadata.clone())?)),
        Err(reason) => why.push(format!("arc: {reason}")),
    }
    let base = imds::base_url(auth)?;
    match imds::probe(&base, &clients.probe).await {
        Ok(()) => {
            tracing::info!(endpoint = %base, "auto: using Azure IMDS");
            let source = ImdsSource::from_config(auth, clients.metadata.clone())?;
            return Ok(Arc::new(source));
        }
        Err(detail) => why.push(format!("imds: no answer from {base} ({detail})")),
    }
    if env.var("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        match WorkloadSource::from_config(auth, env, clients.remote.clone()) {
            Ok(source) => {
                tracing::info!("auto: using Kubernetes workload identity");
                return Ok(Arc::new(source));
            }
            Err(e) => why.push(format!("workload-identity: {e}")),
        }
    } else {
        why.push("workload-identity: AZURE_FEDERATED_TOKEN_FILE is not set".to_owned());
    }
    Err(IdentityError::NoneUsable(
        why.iter()
            .map(|w| format!("  - {w}"))
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

/// A source chosen on first use by [`resolve`], then kept.
pub struct AutoSource {
    auth: AuthConfig,
    env: Env,
    clients: Clients,
    chosen: tokio::sync::OnceCell<Arc<dyn TokenSource>>,
}

impl AutoSource {
    pub fn new(auth: AuthConfig, env: Env, clients: Clients) -> Self {
        Self {
            auth,
            env,
            clients,
            chosen: tokio::sync::OnceCell::new(),
        }
    }

    /// The chosen source (choosing it now if needed).
    pub async fn resolved(&self) -> Result<&Arc<dyn TokenSource>, IdentityError> {
        self.chosen
            .get_or_try_init(|| resolve(&self.auth, &self.env, &self.clients))
            .await
    }
}

#[async_trait::async_trait]
impl TokenSource for AutoSource {
    async fn fetch(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        self.resolved().await?.fetch(audience).await
    }

    fn info(&self) -> SourceInfo {
        match self.chosen.get() {
            Some(source) => source.info(),
            None => SourceInfo {
                kind: "auto",
                endpoint: "(not chosen yet)".to_owned(),
            },
        }
    }

    async fn instance_metadata(&self) -> Result<Option<serde_json::Value>, IdentityError> {
        self.resolved().await?.instance_metadata().await
    }
}
