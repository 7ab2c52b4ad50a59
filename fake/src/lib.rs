//! kvsync-fake: a local Azure emulator for kvsync's development, tests, demo
//! and benchmarks. Real loopback servers, following docs/PROTOCOL.md:
//!
//! * Arc HIMDS over HTTP (the real 401 challenge flow, with `.key` files in a
//!   token directory, single-use),
//! * Key Vault over real HTTPS with a generated test CA (secrets with
//!   versions, the 401 Bearer challenge, list with paging, injectable
//!   403/404/429/5xx/slow responses),
//! * request counters and injected latency.
//!
//! Used in-process by the tests ([`Emulator::start`]) and standalone by the
//! `kvsync-fake` binary (demo, benchmarks), which adds an admin HTTP API.
//!
//! # Agreed in-process API (helpers code against this; extend, don't break)
//!
//! ```ignore
//! let emu = Emulator::start(Options::default()).await?;   // binds 127.0.0.1:0 ports
//! emu.himds_token_endpoint()  -> String  // "http://127.0.0.1:P/metadata/identity/oauth2/token"
//! emu.himds_base()            -> String  // "http://127.0.0.1:P"  (IMDS_ENDPOINT for Arc)
//! emu.vault_url()             -> String  // "https://localhost:Q" (cert SANs: localhost, 127.0.0.1)
//! emu.ca_pem()                -> String  // test CA, PEM
//! emu.ca_file()               -> &Path   // the same, written to a file in the emulator's temp dir
//! emu.token_dir()             -> &Path   // where challenge .key files are created
//! emu.set_secret("db-password", "s3cr3t") -> String            // new version id (32 lowercase hex)
//! emu.set_secret_with("n", "v", SecretOptions { content_type, tags, enabled, expires, not_before }) -> String
//! emu.set_version_enabled("n", &version, false)
//! emu.delete_secret("n")
//! emu.push_fault(Fault { service: Service::KeyVault | Service::Himds,
//!                        path_contains: Option<String>,   // e.g. "/secrets/db-password"
//!                        status: u16, code: Option<String>, // KV error code, e.g. "ForbiddenByRbac"
//!                        retry_after: Option<u64>, delay: Option<Duration>, times: usize })
//! emu.set_challenge_path(Some(PathBuf))  // HIMDS sends this realm instead of a real key file (attack tests)
//! emu.set_identity(Identity { object_id, tenant_id, app_id })   // claims of issued tokens
//! emu.set_token_lifetime(Duration)
//! emu.set_latency(Service, Duration)      // applied once per request, before auth
//! emu.counters() -> Counters { himds_requests, himds_challenges, tokens_issued,
//!                              kv_requests, kv_gets, kv_lists, kv_unauthorized, by_path: BTreeMap<String,u64> }
//! emu.reset_counters()
//! emu.shutdown().await
//! ```
//!
//! Issued access tokens are JWT-shaped (header.payload.signature, base64url)
//! with `oid`, `tid`, `appid`, `aud`, `exp` claims; Key Vault accepts only
//! tokens it issued, unexpired, with `aud` equal to its audience.
//!
//! # Extensions beyond the agreed API
//!
//! * [`Emulator::set_himds_down`]: `true` closes the HIMDS listener (new
//!   connections are REFUSED, open ones dropped); `false` listens again on
//!   the same port.
//! * Hanging Key Vault: [`Fault::hang`] (the next N requests get no answer
//!   for an hour), or a long [`Emulator::set_latency`] for every request.
//! * [`Fault::inner_code`]; a 403 fault whose `code` is a reason such as
//!   `ForbiddenByRbac` is sent as code `Forbidden` + innererror (as Azure).
//! * [`Emulator::issue_token`] (a valid token without the HIMDS dance),
//!   [`Emulator::invalidate_tokens`], [`Emulator::set_instance`],
//!   [`Emulator::clear_faults`], [`Emulator::pending_faults`],
//!   [`Emulator::identity`], [`Emulator::outstanding_challenges`].
//! * Azure VM IMDS on its own port ([`Emulator::imds_base`]):
//!   [`Emulator::add_user_assigned`], [`Emulator::set_imds_system_assigned`],
//!   [`Emulator::set_imds_down`]; faults with `Service::Imds`.
//! * Entra token endpoint for workload identity on its own HTTPS port
//!   ([`Emulator::login_url`], same CA): [`Emulator::set_workload_app`]
//!   (tenant, client id, the accepted assertion); faults with
//!   `Service::Login`.
//! * Certificates (PROTOCOL.md §6): [`Emulator::issue_certificate`],
//!   [`Emulator::set_certificate_exportable`], [`Emulator::cert_root_pem`],
//!   [`Emulator::cert_intermediate_pem`]; `GET /certificates/{name}[/{v}]`.
//! * Keys (public part only): [`Emulator::create_key`] (RSA 2048, EC
//!   P-256/384/521); `GET /keys/{name}[/{v}]` serves the JWK.
//! * [`Emulator::set_list_forbidden`]: listing secrets answers 403
//!   `ForbiddenByRbac` while single GETs work.
//! * Protocol quirks for client robustness tests:
//!   [`Emulator::set_himds_selector_echo`],
//!   [`Emulator::set_vault_api_versions`],
//!   [`Emulator::set_list_empty_first_page`].
//!
//! GET of a secret without a version returns the NEWEST version; if that
//! version is disabled the answer is 403 `Forbidden`/`SecretDisabled`, as on
//! Azure (it does not fall back to an older enabled version).

// Handlers return early with a ready `Response` as the `Err` of a
// `Result`; its size does not matter on these cold paths.
#![allow(clippy::result_large_err)]

mod admin;
mod certificates;
mod entra;
mod faults;
mod himds;
mod imds;
mod issuer;
mod keys;
mod server;
mod state;
mod store;
mod tls;
mod tokens;
mod vault;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub use certificates::IssuedCertificate;
pub use entra::WorkloadApp;
pub use faults::{Fault, HANG_DELAY, Service};
pub use imds::UserAssigned;
pub use issuer::{CertContentType, CertKey, CertOptions, DEFAULT_SANS, DEFAULT_VALIDITY};
pub use keys::{CreatedKey, KeyKind};
pub use state::Counters;
pub use store::SecretOptions;
pub use tokens::{DEFAULT_TOKEN_LIFETIME, Identity};
pub use vault::MAX_RESULTS;

use server::Server;
use state::{Shared, lock};

/// The Key Vault audience of the public cloud (PROTOCOL.md §5).
pub const DEFAULT_VAULT_AUDIENCE: &str = "https://vault.azure.net";

/// How to start an [`Emulator`].
#[derive(Debug, Clone)]
pub struct Options {
    /// HIMDS port on 127.0.0.1; 0 = any free port.
    pub himds_port: u16,
    /// Key Vault port on 127.0.0.1; 0 = any free port.
    pub vault_port: u16,
    /// Where `ca.pem` and `tokens/` go; `None` = a private temp dir removed
    /// when the emulator is dropped.
    pub state_dir: Option<PathBuf>,
    /// The audience Key Vault accepts.
    pub vault_audience: String,
    pub identity: Identity,
    pub token_lifetime: Duration,
    /// Serve the admin API (`/admin/...`) on the HIMDS port (the binary does).
    pub admin_api: bool,
    /// Where challenge `.key` files are created; `None` = `<state dir>/tokens`.
    pub token_dir: Option<PathBuf>,
    /// How challenges name the token directory, when not by its own path:
    /// e.g. `C:\ProgramData\AzureConnectedMachineAgent\Tokens` for a Windows
    /// client under Wine whose `token_dir` is that folder in `drive_c`.
    pub realm_dir: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            himds_port: 0,
            vault_port: 0,
            state_dir: None,
            vault_audience: DEFAULT_VAULT_AUDIENCE.to_owned(),
            identity: Identity::default(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            admin_api: false,
            token_dir: None,
            realm_dir: None,
        }
    }
}

/// A running emulator: HIMDS on plain HTTP and Key Vault on HTTPS, both on
/// 127.0.0.1. Dropping it stops both servers.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    himds: Server,
    vault: Server,
    imds: Server,
    login: Server,
    ca_pem: String,
    ca_file: PathBuf,
    cert_root_file: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl Emulator {
    /// Generates the test PKI, creates the state dir and binds both servers.
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        let (temp, dir) = match &opts.state_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kvsync-fake-")
                    .tempdir()
                    .context("creating a temp dir")?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let token_dir = opts.token_dir.clone().unwrap_or_else(|| dir.join("tokens"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&token_dir)
            .with_context(|| format!("creating token dir {}", token_dir.display()))?;
        let pki = tls::TestPki::generate()?;
        let ca_file = dir.join("ca.pem");
        write_public(&ca_file, pki.ca_pem().as_bytes())
            .with_context(|| format!("writing {}", ca_file.display()))?;

        // Bind the vault first: its URL is the base of ids and nextLinks.
        let vault_listener =
            tokio::net::TcpListener::bind(SocketAddr::new(LOOPBACK, opts.vault_port))
                .await
                .with_context(|| format!("binding the Key Vault port {}", opts.vault_port))?;
        let vault_addr = vault_listener.local_addr()?;
        drop(vault_listener);
        let vault_base = format!("https://localhost:{}", vault_addr.port());
        let issuing_ca = issuer::IssuingCa::generate()?;
        let cert_root_file = dir.join("issuing-ca.pem");
        write_public(&cert_root_file, issuing_ca.root_pem().as_bytes())
            .with_context(|| format!("writing {}", cert_root_file.display()))?;
        let shared = Arc::new(Shared::new(
            token_dir,
            vault_base,
            opts.vault_audience.clone(),
            issuing_ca,
        ));
        lock(&shared.settings).realm_dir = opts.realm_dir.clone();
        {
            let mut t = lock(&shared.tokens);
            t.identity = opts.identity.clone();
            t.lifetime = opts.token_lifetime;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let vault = Server::bind(vault_addr, vault::router(shared.clone()), Some(acceptor))
            .await
            .with_context(|| format!("binding the Key Vault port {}", vault_addr.port()))?;
        let mut himds_router = himds::router(shared.clone());
        if opts.admin_api {
            himds_router = himds_router.merge(admin::router(shared.clone()));
        }
        let himds = Server::bind(
            SocketAddr::new(LOOPBACK, opts.himds_port),
            himds_router,
            None,
        )
        .await
        .with_context(|| format!("binding the HIMDS port {}", opts.himds_port))?;
        let any_port = SocketAddr::new(LOOPBACK, 0);
        let imds = Server::bind(any_port, imds::router(shared.clone()), None)
            .await
            .context("binding the IMDS port")?;
        let login_tls = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let login = Server::bind(any_port, entra::router(shared.clone()), Some(login_tls))
            .await
            .context("binding the login port")?;
        Ok(Self {
            shared,
            himds,
            vault,
            imds,
            login,
            ca_pem: pki.ca_pem().to_owned(),
            ca_file,
            cert_root_file,
            _temp: temp,
        })
    }

    /// `http://127.0.0.1:P/metadata/identity/oauth2/token` (IDENTITY_ENDPOINT).
    pub fn himds_token_endpoint(&self) -> String {
        format!("{}{}", self.himds_base(), himds::TOKEN_PATH)
    }

    /// `http://127.0.0.1:P` (IMDS_ENDPOINT for Arc).
    pub fn himds_base(&self) -> String {
        format!("http://{}", self.himds.local_addr())
    }

    pub fn himds_addr(&self) -> SocketAddr {
        self.himds.local_addr()
    }

    /// `http://127.0.0.1:R`: the Azure VM IMDS base (`[auth] imds_endpoint`).
    pub fn imds_base(&self) -> String {
        format!("http://{}", self.imds.local_addr())
    }

    pub fn imds_addr(&self) -> SocketAddr {
        self.imds.local_addr()
    }

    /// `true`: stop listening on the IMDS port (connections refused);
    /// `false`: listen again on the same port.
    pub async fn set_imds_down(&self, down: bool) -> std::io::Result<()> {
        if down {
            self.imds.stop().await;
            Ok(())
        } else {
            self.imds.start().await
        }
    }

    /// Whether the fake VM has a system-assigned identity (default true).
    pub fn set_imds_system_assigned(&self, on: bool) {
        lock(&self.shared.settings).imds_system_assigned = on;
    }

    /// Assign a user-assigned identity to the fake VM (IMDS selectors).
    pub fn add_user_assigned(&self, identity: UserAssigned) {
        lock(&self.shared.settings).user_assigned.push(identity);
    }

    /// `https://localhost:S/`: the Entra authority host for workload
    /// identity (`AZURE_AUTHORITY_HOST`); same test CA as the vault.
    pub fn login_url(&self) -> String {
        format!("https://localhost:{}/", self.login.local_addr().port())
    }

    pub fn login_addr(&self) -> SocketAddr {
        self.login.local_addr()
    }

    /// The workload-identity application and the assertion Entra accepts.
    pub fn set_workload_app(&self, app: WorkloadApp) {
        lock(&self.shared.settings).workload = app;
    }

    pub fn workload_app(&self) -> WorkloadApp {
        lock(&self.shared.settings).workload.clone()
    }

    /// `https://localhost:Q` (certificate SANs: localhost, 127.0.0.1).
    pub fn vault_url(&self) -> String {
        self.shared.vault_base.clone()
    }

    pub fn vault_addr(&self) -> SocketAddr {
        self.vault.local_addr()
    }

    /// The test root CA, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The test root CA written to `<state dir>/ca.pem`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Where challenge `.key` files are created.
    pub fn token_dir(&self) -> &Path {
        &self.shared.token_dir
    }

    /// Adds a new version; returns its id (32 lowercase hex).
    pub fn set_secret(&self, name: &str, value: &str) -> String {
        self.set_secret_with(name, value, SecretOptions::default())
    }

    pub fn set_secret_with(&self, name: &str, value: &str, opts: SecretOptions) -> String {
        lock(&self.shared.store).set(name, value, opts)
    }

    /// Returns false if there is no such secret version.
    pub fn set_version_enabled(&self, name: &str, version: &str, enabled: bool) -> bool {
        lock(&self.shared.store).set_enabled(name, version, enabled)
    }

    /// Removes a secret and all its versions (GET then answers 404).
    pub fn delete_secret(&self, name: &str) -> bool {
        lock(&self.shared.store).delete(name)
    }

    /// Issues a new version of certificate `name` (creating it if needed):
    /// a leaf signed by the issuing intermediate CA (itself signed by the
    /// issuing root, [`Emulator::cert_root_pem`]), stored as a certificate
    /// object plus its backing secret (same name and version, `kid`,
    /// `managed`, the options' content type). Issuing again is a rotation:
    /// new key, serial and `x5t`. RSA keys need the `openssl` binary.
    pub fn issue_certificate(
        &self,
        name: &str,
        opts: CertOptions,
    ) -> anyhow::Result<IssuedCertificate> {
        certificates::issue(&self.shared, name, &opts)
    }

    /// `false`: the current version's secret is rewritten without the
    /// private key and the policy says `exportable: false` (as a
    /// non-exportable / HSM key). Returns false if there is no such
    /// certificate.
    pub fn set_certificate_exportable(&self, name: &str, exportable: bool) -> bool {
        certificates::set_exportable(&self.shared, name, exportable)
    }

    /// The root CA of issued certificates (not the HTTPS server's), PEM.
    pub fn cert_root_pem(&self) -> String {
        self.shared.issuing_ca.root_pem()
    }

    /// The same, written to `<state dir>/issuing-ca.pem`.
    pub fn cert_root_file(&self) -> &Path {
        &self.cert_root_file
    }

    /// The intermediate CA that signs issued leaves, PEM.
    pub fn cert_intermediate_pem(&self) -> String {
        self.shared.issuing_ca.intermediate_pem()
    }

    /// Creates a new version of key `name` (creating it if needed) with
    /// the given tags; returns its JWK as served and its public PEM. Needs
    /// the `openssl` binary.
    pub fn create_key(
        &self,
        name: &str,
        kind: KeyKind,
        tags: std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<CreatedKey> {
        keys::create(&self.shared, name, kind, tags)
    }

    /// `true`: `GET /secrets` (and versions) answers 403
    /// `Forbidden`/`ForbiddenByRbac`; single GETs still work.
    pub fn set_list_forbidden(&self, on: bool) {
        lock(&self.shared.settings).list_forbidden = on;
    }

    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Faults still queued (not yet fully consumed).
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// `Some(p)`: HIMDS challenges name `p` (no key file is created) and
    /// every key is rejected. `None`: normal challenges.
    pub fn set_challenge_path(&self, path: Option<PathBuf>) {
        lock(&self.shared.settings).challenge_path = path;
    }

    /// HIMDS challenges whose key has not been used yet (nor expired and
    /// purged): a client that completed the flow leaves none behind.
    pub fn outstanding_challenges(&self) -> usize {
        lock(&self.shared.challenges).len()
    }

    pub fn set_identity(&self, identity: Identity) {
        lock(&self.shared.tokens).identity = identity;
    }

    pub fn identity(&self) -> Identity {
        lock(&self.shared.tokens).identity.clone()
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.shared.tokens).lifetime = lifetime;
    }

    /// Issues a token directly (counted in `tokens_issued`).
    pub fn issue_token(&self, resource: &str) -> String {
        let token = lock(&self.shared.tokens).issue(resource);
        self.shared.bump(|c| c.tokens_issued += 1);
        token.access_token
    }

    /// Key Vault rejects every token issued so far (401).
    pub fn invalidate_tokens(&self) {
        lock(&self.shared.tokens).invalidate_all();
    }

    /// Sets the `compute` object of instance metadata.
    pub fn set_instance(&self, compute: serde_json::Value) {
        lock(&self.shared.settings).compute = compute;
    }

    /// Arc agents >= 1.67 echo a `client_id`/`object_id`/`msi_res_id`
    /// selector in the token response; older ones ignore it (default: off).
    pub fn set_himds_selector_echo(&self, echo: bool) {
        lock(&self.shared.settings).echo_selector = echo;
    }

    /// `Some(list)`: Key Vault answers 400 `BadParameter` to any other
    /// `api-version`. `None` (default): any non-empty api-version.
    pub fn set_vault_api_versions(&self, versions: Option<Vec<String>>) {
        lock(&self.shared.settings).vault_api_versions = versions;
    }

    /// `true`: every list (secrets, versions) starts with an empty page
    /// whose `nextLink` is not null, as Azure sometimes answers.
    pub fn set_list_empty_first_page(&self, on: bool) {
        lock(&self.shared.settings).empty_first_list_page = on;
    }

    /// Write `fields` (a JSON object) over every later token answer of
    /// HIMDS, IMDS and Entra ID, e.g. `{"expires_on": "18446744073709551615"}`
    /// (range-check tests). An empty object restores normal answers.
    pub fn set_token_fields(&self, fields: serde_json::Value) {
        lock(&self.shared.settings).token_fields = fields.as_object().cloned().unwrap_or_default();
    }

    /// Applied once per request, before authentication.
    pub fn set_latency(&self, service: Service, latency: Duration) {
        self.shared.set_latency(service, latency);
    }

    /// `true`: stop listening on the HIMDS port (connections refused, open
    /// ones dropped); `false`: listen again on the same port.
    pub async fn set_himds_down(&self, down: bool) -> std::io::Result<()> {
        if down {
            self.himds.stop().await;
            Ok(())
        } else {
            self.himds.start().await
        }
    }

    pub fn counters(&self) -> Counters {
        lock(&self.shared.counters).clone()
    }

    pub fn reset_counters(&self) {
        *lock(&self.shared.counters) = Counters::default();
        lock(&self.shared.request_log).clear();
    }

    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.tokens).issued_tokens()
    }

    /// Arrival times of the requests whose path contains `path_contains`,
    /// oldest first.
    pub fn request_times(&self, path_contains: &str) -> Vec<std::time::Instant> {
        lock(&self.shared.request_log)
            .iter()
            .filter(|(_, p)| p.contains(path_contains))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Stops both servers (also done on drop).
    pub async fn shutdown(self) {
        self.himds.stop().await;
        self.vault.stop().await;
        self.imds.stop().await;
        self.login.stop().await;
    }
}

/// Writes (or replaces) a world-readable file such as `ca.pem`.
fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}
