//! The emulator's shared state: the secret store, issued tokens, outstanding
//! HIMDS challenges, scripted faults, latency, settings and counters. One
//! `Arc<Shared>` is shared by both servers and the [`crate::Emulator`]
//! handle.
//!
//! Invariants: every lock is a short, synchronous critical section (never
//! held across an `.await`); a poisoned lock is recovered (a panicking test
//! thread must not wedge the emulator).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::certificates::CertStore;
use crate::faults::{Fault, FaultQueue, Service};
use crate::issuer::IssuingCa;
use crate::keys::KeyStore;
use crate::store::Store;
use crate::tokens::TokenIssuer;

/// Request counters. `by_path` counts requests per URL path (no query) on
/// both services (admin requests are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Every request to the HIMDS port (token and instance metadata).
    pub himds_requests: u64,
    /// 401 challenges sent (each created a `.key` file, or named the
    /// `set_challenge_path` file).
    pub himds_challenges: u64,
    /// HIMDS token requests that carried an `Authorization` header (the
    /// second GET of the challenge flow, whatever its outcome). A client
    /// that refused a challenge file makes none.
    #[serde(default)]
    pub himds_authorized: u64,
    /// Every request to the IMDS port.
    pub imds_requests: u64,
    /// Every request to the Entra (login) port.
    pub login_requests: u64,
    /// Access tokens issued (all token endpoints).
    pub tokens_issued: u64,
    /// Every request to the Key Vault port.
    pub kv_requests: u64,
    /// Authorized single-secret GETs (`/secrets/{name}[/{version}]`), whatever
    /// their outcome (200, 403 disabled, 404).
    pub kv_gets: u64,
    /// Authorized list requests (`/secrets`, `/secrets/{name}/versions`),
    /// one per page.
    pub kv_lists: u64,
    /// Key Vault 401 answers (missing, unknown, expired or wrong-audience token).
    pub kv_unauthorized: u64,
    /// Authorized certificate GETs (`/certificates/{name}[/{version}]`).
    #[serde(default)]
    pub kv_cert_gets: u64,
    /// Authorized key GETs (`/keys/{name}[/{version}]`).
    #[serde(default)]
    pub kv_key_gets: u64,
    pub by_path: BTreeMap<String, u64>,
}

/// Mutable settings.
#[derive(Debug)]
pub struct Settings {
    pub latency_himds: Duration,
    pub latency_kv: Duration,
    /// When set, HIMDS challenges name this path and create no key file; every
    /// `Authorization` is then rejected (attack tests).
    pub challenge_path: Option<PathBuf>,
    /// When set, challenges name their new key file as `<realm_dir>\<guid>.key`
    /// (a Windows path, e.g. `C:\ProgramData\AzureConnectedMachineAgent\Tokens`)
    /// while the file itself is created in the token directory (e.g. that
    /// folder inside a Wine prefix's `drive_c`).
    pub realm_dir: Option<String>,
    /// The `compute` object of instance metadata.
    pub compute: Value,
    /// Echo a user-assigned identity selector (`client_id`, `object_id`,
    /// `msi_res_id`) in the token response, as Arc agents >= 1.67 do
    /// (PROTOCOL.md §1). Off by default: older agents ignore it.
    pub echo_selector: bool,
    /// When set, Key Vault answers 400 to any other `api-version` (catches
    /// clients that follow a `nextLink` without replacing its api-version).
    pub vault_api_versions: Option<Vec<String>>,
    /// Every list starts with an empty page whose `nextLink` is not null
    /// (PROTOCOL.md §5: "a page may be empty while nextLink is not null").
    pub empty_first_list_page: bool,
    /// Listing secrets (`GET /secrets`, versions) answers 403
    /// `Forbidden`/`ForbiddenByRbac`, as for an identity without the list
    /// (`secrets/readMetadata`) permission; single GETs still work.
    pub list_forbidden: bool,
    /// Fields written over every token answer (HIMDS, IMDS, Entra), as
    /// given: out-of-range expiries for the client's range checks.
    pub token_fields: serde_json::Map<String, Value>,
    /// IMDS: the VM has a system-assigned identity (default true).
    pub imds_system_assigned: bool,
    /// IMDS: user-assigned identities assigned to the VM.
    pub user_assigned: Vec<crate::imds::UserAssigned>,
    /// Entra: the workload-identity app and the assertion it accepts.
    pub workload: crate::entra::WorkloadApp,
}

pub struct Shared {
    pub settings: Mutex<Settings>,
    pub store: Mutex<Store>,
    /// Certificate objects; lock after `store` when holding both.
    pub certs: Mutex<CertStore>,
    /// Key objects (public halves only).
    pub keys: Mutex<KeyStore>,
    /// The CA that signs certificate objects.
    pub issuing_ca: IssuingCa,
    pub tokens: Mutex<TokenIssuer>,
    /// Arrival time and path of every request (both services), for tests
    /// that check request spacing (e.g. `Retry-After`).
    pub request_log: Mutex<Vec<(std::time::Instant, String)>>,
    pub faults: Mutex<FaultQueue>,
    pub counters: Mutex<Counters>,
    /// Outstanding HIMDS challenges: key file contents → (key file path,
    /// when it was created).
    pub challenges: Mutex<HashMap<String, (PathBuf, Instant)>>,
    pub token_dir: PathBuf,
    /// `https://localhost:Q`: the base of ids and nextLinks.
    pub vault_base: String,
    /// The audience Key Vault accepts, e.g. `https://vault.azure.net`.
    pub vault_audience: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("token_dir", &self.token_dir)
            .field("vault_base", &self.vault_base)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from poisoning.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    pub fn new(
        token_dir: PathBuf,
        vault_base: String,
        vault_audience: String,
        issuing_ca: IssuingCa,
    ) -> Self {
        Self {
            settings: Mutex::new(Settings {
                latency_himds: Duration::ZERO,
                latency_kv: Duration::ZERO,
                challenge_path: None,
                realm_dir: None,
                compute: default_compute(),
                echo_selector: false,
                vault_api_versions: None,
                empty_first_list_page: false,
                list_forbidden: false,
                token_fields: serde_json::Map::new(),
                imds_system_assigned: true,
                user_assigned: Vec::new(),
                workload: crate::entra::WorkloadApp::default(),
            }),
            store: Mutex::new(Store::default()),
            certs: Mutex::new(CertStore::default()),
            keys: Mutex::new(KeyStore::default()),
            issuing_ca,
            tokens: Mutex::new(TokenIssuer::default()),
            request_log: Mutex::new(Vec::new()),
            faults: Mutex::new(FaultQueue::default()),
            counters: Mutex::new(Counters::default()),
            challenges: Mutex::new(HashMap::new()),
            token_dir,
            vault_base,
            vault_audience,
        }
    }

    pub fn count_request(&self, service: Service, path: &str) {
        lock(&self.request_log).push((std::time::Instant::now(), path.to_owned()));
        let mut c = lock(&self.counters);
        match service {
            Service::Himds => c.himds_requests += 1,
            Service::Imds => c.imds_requests += 1,
            Service::Login => c.login_requests += 1,
            Service::KeyVault => c.kv_requests += 1,
        }
        *c.by_path.entry(path.to_owned()).or_insert(0) += 1;
    }

    /// Applies `f` to the counters under the lock.
    pub fn bump(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut lock(&self.counters));
    }

    pub fn latency(&self, service: Service) -> Duration {
        let s = lock(&self.settings);
        match service {
            // IMDS shares the HIMDS latency, Entra the Key Vault one.
            Service::Himds | Service::Imds => s.latency_himds,
            Service::KeyVault | Service::Login => s.latency_kv,
        }
    }

    pub fn set_latency(&self, service: Service, latency: Duration) {
        let mut s = lock(&self.settings);
        match service {
            Service::Himds | Service::Imds => s.latency_himds = latency,
            Service::KeyVault | Service::Login => s.latency_kv = latency,
        }
    }

    pub fn take_fault(&self, service: Service, path: &str) -> Option<Fault> {
        lock(&self.faults).take(service, path)
    }
}

/// Default `compute` instance metadata of the fake Arc machine
/// (PROTOCOL.md §1: missing values are empty strings).
pub fn default_compute() -> Value {
    let sub = "00000000-0000-0000-0000-000000000000";
    let rg = "kvsync-rg";
    let name = "kvsync-fake-host";
    json!({
        "name": name,
        "location": "westeurope",
        "resourceGroupName": rg,
        "subscriptionId": sub,
        "resourceId": format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{name}"
        ),
        "osType": "Linux",
        "tags": "a:1;b:2",
        "tagsList": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
        "vmId": "6b2e3b8e-0c3f-4d9a-9a7e-3f1c0d2b5a41",
        "azEnvironment": "AzurePublicCloud",
    })
}

impl Shared {
    /// `body` with the scripted token fields written over it.
    pub fn token_answer(&self, mut body: Value) -> Value {
        let fields = crate::lock(&self.settings).token_fields.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.extend(fields);
        }
        body
    }
}
