//! HTTP clients. Two kinds, built once and shared (connection reuse):
//!
//! * [`metadata_client`]: plain HTTP to HIMDS/IMDS on the host. Never uses a
//!   proxy (PROTOCOL.md §2: "Never send through a proxy").
//! * [`vault_client`]: HTTPS only (rustls, ring), trusting the OS store,
//!   `SSL_CERT_FILE` and `[tls] ca_file`; honours `HTTPS_PROXY`/`NO_PROXY`
//!   (and `ALL_PROXY`, lower-case spellings too) taken from the injected
//!   [`Env`], never from ambient globals (see [`proxy_from_env`]).
//!
//! Also: [`metadata_probe_client`] (short timeouts, for the IMDS presence
//! probe), the bounded backoff schedule shared by every retry loop
//! ([`RetryPolicy`], [`RetryState`]), and helpers that describe transport
//! failures without quoting URLs or headers ([`transport_detail`]) and read
//! bodies with a size limit ([`read_body_limited`]).

use std::path::Path;
use std::time::Duration;

use crate::env::Env;

/// Connect timeout for the local metadata endpoints (they are on the host).
pub const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-request timeout for metadata endpoints.
pub const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for Key Vault and the login endpoint.
pub const REMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-request timeout for Key Vault and the login endpoint.
pub const REMOTE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no PEM certificate")]
    CaFileEmpty { path: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("proxy setup failed: {0}")]
    Proxy(String),
    #[error("HTTP client setup failed: {0}")]
    Client(#[from] reqwest::Error),
}

pub fn metadata_client() -> Result<reqwest::Client, HttpSetupError> {
    plain_client(METADATA_CONNECT_TIMEOUT, METADATA_REQUEST_TIMEOUT)
}

/// A plain-HTTP client without a proxy (the metadata endpoints).
fn plain_client(connect: Duration, request: Duration) -> Result<reqwest::Client, HttpSetupError> {
    // reqwest is built with `rustls-no-provider`: every client needs a TLS
    // config even if it only speaks plain HTTP (building one without it
    // panics). Empty roots: the metadata endpoints are never HTTPS.
    let tls = client_tls(rustls::RootCertStore::empty())?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // Never follow a redirect: an answer from another origin would be
        // taken for the metadata endpoint's.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect)
        .timeout(request)
        .build()?)
}

/// A rustls client config (ring provider, safe protocol versions) trusting
/// `roots`.
fn client_tls(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, HttpSetupError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Connect timeout of the IMDS presence probe (PROTOCOL.md §2: "a short
/// connect timeout (≤ 1 s)").
pub const METADATA_PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Whole-request timeout of the IMDS presence probe: a connected IMDS
/// answers a header-less request at once.
pub const METADATA_PROBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Like [`metadata_client`], with the short timeouts of the IMDS presence
/// probe. Never uses a proxy.
pub fn metadata_probe_client() -> Result<reqwest::Client, HttpSetupError> {
    plain_client(
        METADATA_PROBE_CONNECT_TIMEOUT,
        METADATA_PROBE_REQUEST_TIMEOUT,
    )
}

/// HTTPS client for Key Vault and Entra.
pub fn vault_client(env: &Env, ca_file: Option<&Path>) -> Result<reqwest::Client, HttpSetupError> {
    vault_client_with_timeout(env, ca_file, REMOTE_REQUEST_TIMEOUT)
}

/// The proxy for HTTPS requests described by `env`: `HTTPS_PROXY` (or
/// `https_proxy`), else `ALL_PROXY` (or `all_proxy`), with the `NO_PROXY`
/// (or `no_proxy`) exclusions. `None` when no proxy is set. Only the remote
/// client uses it; metadata endpoints are always reached directly.
pub fn proxy_from_env(env: &Env) -> Result<Option<reqwest::Proxy>, HttpSetupError> {
    let pick = |names: &[&str]| names.iter().find_map(|n| env.var(n).map(str::to_owned));
    let Some(url) = pick(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]) else {
        return Ok(None);
    };
    let no_proxy =
        pick(&["NO_PROXY", "no_proxy"]).and_then(|list| reqwest::NoProxy::from_string(&list));
    // The proxy URL may carry credentials: never quote it in the error.
    let proxy = reqwest::Proxy::https(url.as_str()).map_err(|_| {
        HttpSetupError::Proxy(
            "HTTPS_PROXY / ALL_PROXY is not a valid proxy URL such as http://proxy:3128".to_owned(),
        )
    })?;
    Ok(Some(proxy.no_proxy(no_proxy)))
}

fn tls_config(env: &Env, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, HttpSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    // The OS store. rustls-native-certs itself would let SSL_CERT_FILE
    // *replace* the OS store; we want OS store *plus* SSL_CERT_FILE.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = env.var("SSL_CERT_FILE") {
        add_pem_file(&mut roots, Path::new(path))?;
    }
    if let Some(path) = ca_file {
        add_pem_file(&mut roots, path)?;
    }
    let mut config = client_tls(roots)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), HttpSetupError> {
    use rustls_pki_types::pem::PemObject;
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| HttpSetupError::CaFile {
        path: shown.clone(),
        source,
    })?;
    let mut added = 0;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&bytes).flatten() {
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    if added == 0 {
        return Err(HttpSetupError::CaFileEmpty { path: shown });
    }
    Ok(())
}

/// Like [`vault_client`] with a different per-request timeout (tests use a
/// short one to exercise the timeout path without waiting 30 s).
pub fn vault_client_with_timeout(
    env: &Env,
    ca_file: Option<&Path>,
    request_timeout: Duration,
) -> Result<reqwest::Client, HttpSetupError> {
    let tls = tls_config(env, ca_file)?;
    // `no_proxy()` turns off reqwest's own reading of the process
    // environment: the proxy comes from the injected `Env` only.
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // Never follow a redirect: the body of another origin would be
        // taken for the secret, and the token would travel along.
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .no_proxy()
        .connect_timeout(REMOTE_CONNECT_TIMEOUT.min(request_timeout))
        .timeout(request_timeout);
    if let Some(proxy) = proxy_from_env(env)? {
        builder = builder.proxy(proxy);
    }
    Ok(builder.build()?)
}

/// A bounded exponential backoff schedule with jitter. Injected into the
/// clients (not hard-wired) so tests can shorten every wait; production code
/// uses [`RetryPolicy::himds`] and [`RetryPolicy::vault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (≥ 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each retry.
    pub base: Duration,
    /// Largest single backoff wait.
    pub cap: Duration,
    /// Budget for the sum of all backoff waits of one operation.
    pub total: Duration,
    /// Largest `Retry-After` honoured (longer values are clamped to it).
    pub max_retry_after: Duration,
}

/// HIMDS token legs: "exponential from ~1 s, total ≤ ~70 s" (PROTOCOL.md §1):
/// waits 1, 2, 4, 8, 16, 32 s = 63 s, so 7 attempts.
pub const HIMDS_MAX_ATTEMPTS: u32 = 7;
/// PROTOCOL.md §1: "total ≤ ~70 s".
pub const HIMDS_RETRY_BUDGET: Duration = Duration::from_secs(70);
/// Key Vault 429 without `Retry-After`: "back off 1, 2, 4, 8, 16 s with
/// jitter" (PROTOCOL.md §5), so 6 attempts; also used for 5xx/timeouts.
pub const VAULT_MAX_ATTEMPTS: u32 = 6;
/// Largest single Key Vault backoff (PROTOCOL.md §5: the schedule ends at 16 s).
pub const VAULT_BACKOFF_CAP: Duration = Duration::from_secs(16);
/// Sum of Key Vault backoff waits for one request: 1+2+4+8+16 = 31 s plus
/// room for `Retry-After` answers; keeps one secret from stalling a round.
pub const VAULT_RETRY_BUDGET: Duration = Duration::from_secs(90);
/// Key Vault `Retry-After` values above this are clamped (the service sends
/// single-digit seconds; a huge value must not park the agent).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// First backoff wait (PROTOCOL.md §1 and §5: "from ~1 s").
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

impl RetryPolicy {
    /// HIMDS / IMDS token requests (PROTOCOL.md §1).
    pub const fn himds() -> Self {
        Self {
            max_attempts: HIMDS_MAX_ATTEMPTS,
            base: BACKOFF_BASE,
            cap: Duration::from_secs(32),
            total: HIMDS_RETRY_BUDGET,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

    /// Key Vault data-plane requests (PROTOCOL.md §5).
    pub const fn vault() -> Self {
        Self {
            max_attempts: VAULT_MAX_ATTEMPTS,
            base: BACKOFF_BASE,
            cap: VAULT_BACKOFF_CAP,
            total: VAULT_RETRY_BUDGET,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

    /// Same shape, millisecond waits: for tests only. `Retry-After` is
    /// still honoured as sent (up to 5 s) so its handling stays testable.
    pub const fn fast_for_tests(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(8),
            total: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(5),
        }
    }

    /// The wait before retry number `retry` (1 = first retry):
    /// `base · 2^(retry-1)`, capped, scaled by a random factor in [0.75, 1]
    /// so a fleet does not retry in lockstep and the schedule never exceeds
    /// the nominal one.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let nominal = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let factor = rand::random_range(0.75..=1.0);
        nominal.mul_f64(factor)
    }
}

/// Tracks one operation's attempts and waits against a [`RetryPolicy`].
#[derive(Debug)]
pub struct RetryState<'a> {
    policy: &'a RetryPolicy,
    retries: u32,
    waited: Duration,
}

impl<'a> RetryState<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            retries: 0,
            waited: Duration::ZERO,
        }
    }

    /// Retries done so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The wait before the next retry (`retry_after` if the server sent one,
    /// clamped; else the backoff), or `None` when attempts or budget are
    /// exhausted. Records the retry.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.retries + 1 >= self.policy.max_attempts.max(1) {
            return None;
        }
        let wait = match retry_after {
            Some(d) => d.min(self.policy.max_retry_after),
            None => self.policy.backoff(self.retries + 1),
        };
        if self.waited + wait > self.policy.total {
            return None;
        }
        self.retries += 1;
        self.waited += wait;
        Some(wait)
    }
}

/// Why a request failed below HTTP, in words that carry no URL or header.
pub fn transport_detail(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                std::io::ErrorKind::TimedOut => "timed out".to_owned(),
                kind => format!("I/O error ({kind})"),
            };
        }
        source = e.source();
    }
    if err.is_connect() {
        "connection failed".to_owned()
    } else if err.is_body() || err.is_decode() {
        "reading the response failed".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// True when `err` is a refused TCP connection (nothing listens there).
pub fn is_connection_refused(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether an error code from a service answer is a short identifier
/// (`invalid_request`, `ForbiddenByRbac`) and so safe to quote; anything
/// else may echo input and is never put in a message.
pub fn is_plain_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Read a response body, refusing more than `limit` bytes.
pub async fn read_body_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge(limit));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(BodyError::Transport(e)),
        }
    }
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Transport(reqwest::Error),
}
