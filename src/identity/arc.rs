//! Azure Arc HIMDS token source (PROTOCOL.md §1): the two-GET challenge
//! flow. The challenge file is validated by [`super::challenge`] before it is
//! opened; exactly one retry carries its contents, a second 401 is an error.
//!
//! The endpoint's host is resolved to loopback addresses only and each is
//! dialled explicitly (never "whatever `localhost` resolves to first"); on
//! every connection of the flow the owner of the server end is checked
//! ([`super::arc_peer`]) before a byte is sent, so the challenge key only
//! ever travels on a connection accepted by root or the Arc agent's user.
//! A listener of anyone else is skipped (the next address is tried) and, if
//! no address is left, reported as a possible impersonation.
//! Transient failures (404, 410, 429, 5xx, connection errors) are retried on
//! an injectable [`RetryPolicy`]. Neither the token nor the key file's
//! contents ever reach an error or a log line: debug lines name the endpoint
//! and the status only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::challenge::{self, ChallengeError};
use super::{AccessToken, IdentityError, SourceInfo, TokenSource};
use crate::config::AuthConfig;
use crate::env::Env;
use crate::http::{RetryPolicy, RetryState};

/// HIMDS api-version (PROTOCOL.md §1: "Use 2020-06-01").
pub const API_VERSION: &str = "2020-06-01";
/// Default HIMDS token endpoint when the agent is installed but the env
/// vars are missing (PROTOCOL.md §1).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";
/// Largest token answer we read; real ones are ~2 KiB.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

pub struct ArcSource {
    pub endpoint: Url,
    pub token_dir: PathBuf,
    /// HIMDS base for instance metadata: `IMDS_ENDPOINT`, else the token
    /// endpoint's origin.
    pub instance_base: Url,
    http: reqwest::Client,
    retry: RetryPolicy,
    /// Owners accepted for the listener that receives the challenge key.
    agent_uids: Vec<u32>,
}

/// One HIMDS answer read in full.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Why one leg failed: the listener's owner is not the Arc agent (try the
/// next address), or anything else.
enum LegError {
    Impostor(String),
    Other(IdentityError),
}

impl ArcSource {
    pub fn new(endpoint: Url, token_dir: PathBuf, http: reqwest::Client) -> Self {
        let mut instance_base = endpoint.clone();
        instance_base.set_path("/");
        instance_base.set_query(None);
        Self {
            endpoint,
            token_dir,
            instance_base,
            http,
            retry: RetryPolicy::himds(),
            agent_uids: super::arc_peer::accepted_uids(None),
        }
    }

    /// Accept listeners of `user` (besides root) as the Arc agent
    /// (`[auth] arc_agent_user`; default `himds`).
    pub fn with_agent_user(mut self, user: &str) -> Self {
        self.agent_uids = super::arc_peer::accepted_uids(Some(user));
        self
    }

    /// Replace the retry schedule (tests shorten it).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Endpoint from config, else `IDENTITY_ENDPOINT`, else the default when
    /// the agent is installed.
    pub fn from_config(
        auth: &AuthConfig,
        env: &Env,
        http: reqwest::Client,
    ) -> Result<Self, IdentityError> {
        let endpoint = resolve_endpoint(auth, env)?;
        let token_dir = match &auth.test_arc_token_dir {
            Some(dir) => dir.clone(),
            None => default_token_dir(env)?,
        };
        let mut source = Self::new(endpoint, token_dir, http);
        if let Some(user) = &auth.arc_agent_user {
            source = source.with_agent_user(user);
        }
        // `IMDS_ENDPOINT` names the HIMDS base unless the config chose the
        // token endpoint (then its origin is the base).
        if auth.identity_endpoint.is_none()
            && let Some(base) = env.var("IMDS_ENDPOINT").and_then(|v| Url::parse(v).ok())
        {
            source.instance_base = base;
        }
        Ok(source)
    }

    fn token_url(&self, audience: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION)
            .append_pair("resource", audience);
        url
    }

    fn endpoint_str(&self) -> String {
        self.endpoint.to_string()
    }

    /// The endpoint's addresses, loopback only, in resolver order.
    async fn addresses(&self) -> Result<Vec<SocketAddr>, IdentityError> {
        let port = self.endpoint.port_or_known_default().unwrap_or(80);
        let resolved: Vec<SocketAddr> = match self.endpoint.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| IdentityError::Unreachable {
                    endpoint: self.endpoint_str(),
                    detail: format!("cannot resolve the host ({e})"),
                })?
                .collect(),
            None => Vec::new(),
        };
        let mut loopback: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| a.ip().to_canonical().is_loopback())
            .collect();
        loopback.dedup();
        if loopback.is_empty() {
            return Err(IdentityError::Config(format!(
                "the HIMDS endpoint {} does not resolve to a loopback address; kvsync sends the Arc challenge key to the local Arc agent only",
                self.endpoint
            )));
        }
        Ok(loopback)
    }

    /// One attempt of the challenge flow: GET, answer the 401 once, GET,
    /// each on a connection whose listener is the Arc agent's.
    async fn attempt(&self, url: &Url) -> Result<AccessToken, IdentityError> {
        let mut impostors = Vec::new();
        let mut last = None;
        for addr in self.addresses().await? {
            match self.get(addr, url, None).await {
                Ok(first) => return self.after_first(addr, url, first).await,
                Err(LegError::Impostor(why)) => {
                    tracing::warn!(%addr, "{why}");
                    impostors.push(why);
                }
                Err(LegError::Other(e)) => last = Some(e),
            }
        }
        match (impostors.is_empty(), last) {
            (false, _) => Err(IdentityError::Other(impostors.join("; "))),
            (true, Some(e)) => Err(e),
            (true, None) => Err(IdentityError::ArcNotRunning {
                endpoint: self.endpoint_str(),
                detail: "no address to connect to".to_owned(),
            }),
        }
    }

    async fn after_first(
        &self,
        addr: SocketAddr,
        url: &Url,
        first: Answer,
    ) -> Result<AccessToken, IdentityError> {
        if first.status != StatusCode::UNAUTHORIZED {
            return self.finish(first);
        }
        let key = self.answer_challenge(&first.headers)?;
        let second = match self.get(addr, url, Some(&key)).await {
            Ok(a) => a,
            Err(LegError::Impostor(why)) => return Err(IdentityError::Other(why)),
            Err(LegError::Other(e)) => return Err(e),
        };
        if second.status == StatusCode::UNAUTHORIZED {
            return Err(IdentityError::Status {
                endpoint: self.endpoint_str(),
                status: 401,
                code: String::new(),
                detail: "the Arc agent rejected the challenge key; not retrying".to_owned(),
            });
        }
        self.finish(second)
    }

    /// GET `url` on a new connection to `addr`, after checking who owns
    /// the server end of it; with `key`, as `Authorization: Basic <key>`.
    async fn get(
        &self,
        addr: SocketAddr,
        url: &Url,
        key: Option<&SecretString>,
    ) -> Result<Answer, LegError> {
        use crate::http::{METADATA_CONNECT_TIMEOUT, METADATA_REQUEST_TIMEOUT};
        let other = LegError::Other;
        let stream = match tokio::time::timeout(
            METADATA_CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(other(self.io_error(addr, &e))),
            Err(_) => {
                return Err(other(
                    self.io_error(addr, &std::io::ErrorKind::TimedOut.into()),
                ));
            }
        };
        self.check_listener(&stream, addr)?;
        let request = self.request(url, key).map_err(other)?;
        let exchange = async {
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            let conn = tokio::spawn(conn);
            let resp = sender.send_request(request).await?;
            let (parts, body) = resp.into_parts();
            let limited = http_body_util::Limited::new(body, MAX_TOKEN_RESPONSE_BYTES);
            let body = limited.collect().await.map(|b| b.to_bytes().to_vec());
            conn.abort();
            Ok::<_, hyper::Error>((parts, body))
        };
        let (parts, body) = match tokio::time::timeout(METADATA_REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return Err(other(IdentityError::Unreachable {
                    endpoint: self.endpoint_str(),
                    detail: format!("HTTP exchange with {addr} failed ({e})"),
                }));
            }
            Err(_) => {
                return Err(other(IdentityError::Unreachable {
                    endpoint: self.endpoint_str(),
                    detail: format!("no answer from {addr} within {METADATA_REQUEST_TIMEOUT:?}"),
                }));
            }
        };
        let body = body.map_err(|_| {
            other(IdentityError::Malformed {
                endpoint: self.endpoint_str(),
                detail: "the answer is too large or was cut short".to_owned(),
            })
        })?;
        tracing::debug!(endpoint = %self.endpoint, %addr, status = parts.status.as_u16(), "HIMDS answered");
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Refuse a connection whose server end belongs to neither root nor
    /// the Arc agent's user.
    fn check_listener(
        &self,
        stream: &tokio::net::TcpStream,
        addr: SocketAddr,
    ) -> Result<(), LegError> {
        let local = stream
            .local_addr()
            .map_err(|e| LegError::Other(self.io_error(addr, &e)))?;
        match super::arc_peer::server_owner(local, addr) {
            Ok(super::arc_peer::Owner::Uid(uid)) if self.agent_uids.contains(&uid) => Ok(()),
            Ok(super::arc_peer::Owner::Uid(uid)) => Err(LegError::Impostor(format!(
                "the HIMDS endpoint {} answered on {addr} from a socket of {}, not of root or the Arc agent's user: a local process may be impersonating the Arc agent; the challenge key was not sent (if the Arc agent runs as another user, set [auth] arc_agent_user)",
                self.endpoint,
                super::arc_peer::describe(uid)
            ))),
            Ok(super::arc_peer::Owner::Unknown) => Ok(()),
            Err(e) => Err(LegError::Impostor(format!(
                "the HIMDS endpoint {} answered on {addr}, but the owner of that socket cannot be checked ({e}); the challenge key was not sent",
                self.endpoint
            ))),
        }
    }

    fn request(
        &self,
        url: &Url,
        key: Option<&SecretString>,
    ) -> Result<hyper::Request<http_body_util::Empty<hyper::body::Bytes>>, IdentityError> {
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or("localhost")),
            None => url.host_str().unwrap_or("localhost").to_owned(),
        };
        let mut builder = hyper::Request::get(target)
            .header(hyper::header::HOST, host)
            .header("Metadata", "true");
        if let Some(key) = key {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Basic {}", key.expose_secret()))
                    .map_err(|_| IdentityError::Malformed {
                    endpoint: self.endpoint_str(),
                    detail: "the challenge key file holds bytes not allowed in an HTTP header"
                        .to_owned(),
                })?;
            value.set_sensitive(true);
            builder = builder.header(hyper::header::AUTHORIZATION, value);
        }
        builder
            .body(http_body_util::Empty::new())
            .map_err(|e| IdentityError::Other(format!("building the HIMDS request: {e}")))
    }

    fn io_error(&self, addr: SocketAddr, e: &std::io::Error) -> IdentityError {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            IdentityError::ArcNotRunning {
                endpoint: self.endpoint_str(),
                detail: format!("connection to {addr} refused"),
            }
        } else {
            IdentityError::Unreachable {
                endpoint: self.endpoint_str(),
                detail: format!("{addr}: {e}"),
            }
        }
    }

    /// Parse the 401's `WWW-Authenticate`, validate and read the key file.
    fn answer_challenge(&self, headers: &HeaderMap) -> Result<SecretString, IdentityError> {
        let malformed = |detail: &str| IdentityError::Malformed {
            endpoint: self.endpoint_str(),
            detail: detail.to_owned(),
        };
        // HeaderMap lookups are case-insensitive: `Www-Authenticate` matches.
        let header = headers
            .get(reqwest::header::WWW_AUTHENTICATE)
            .ok_or_else(|| malformed("HTTP 401 without a WWW-Authenticate challenge"))?;
        let header = header
            .to_str()
            .map_err(|_| malformed("the WWW-Authenticate header is not text"))?;
        let path = challenge::parse_realm(header)
            .ok_or_else(|| malformed("the WWW-Authenticate header is not `Basic realm=<path>`"))?;
        challenge::read_key(&path, &self.token_dir)
            .map_err(|e| map_challenge_error(&path, &self.endpoint_str(), e))
    }

    /// A non-401 answer: 200 is a token, anything else an error.
    fn finish(&self, answer: Answer) -> Result<AccessToken, IdentityError> {
        let endpoint = self.endpoint_str();
        if answer.status != StatusCode::OK {
            return Err(status_error(&endpoint, answer.status, &answer.body));
        }
        super::parse_token(&endpoint, &answer.body)
    }
}

/// Map a challenge-file failure to the operator-facing error.
pub fn map_challenge_error(path: &Path, endpoint: &str, e: ChallengeError) -> IdentityError {
    let path = path.display().to_string();
    match e {
        ChallengeError::Refused(reason) => IdentityError::ChallengeRefused {
            path,
            reason,
            endpoint: endpoint.to_owned(),
        },
        ChallengeError::Permission => IdentityError::ChallengePermission { path },
        ChallengeError::Io(kind) => IdentityError::Other(format!(
            "cannot read the Azure Arc challenge file {path}: {kind}"
        )),
    }
}

/// A non-200 HIMDS/IMDS answer. Only the `error` code (a short token such as
/// `invalid_request`) is quoted; the description is summarised by status.
pub(super) fn status_error(endpoint: &str, status: StatusCode, body: &[u8]) -> IdentityError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| super::error_code(&v))
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let detail = match status.as_u16() {
        400 => "bad request: the identity may not be assigned to this machine",
        404 | 410 | 429 => "the identity service is not ready or is busy (retried)",
        s if s >= 500 => "the identity service failed (retried)",
        _ => "unexpected answer",
    };
    IdentityError::Status {
        endpoint: endpoint.to_owned(),
        status: status.as_u16(),
        code,
        detail: detail.to_owned(),
    }
}

fn resolve_endpoint(auth: &AuthConfig, env: &Env) -> Result<Url, IdentityError> {
    if let Some(url) = &auth.identity_endpoint {
        return Ok(url.clone());
    }
    if let Some(raw) = env.var("IDENTITY_ENDPOINT") {
        return Url::parse(raw).map_err(|e| {
            IdentityError::Config(format!("IDENTITY_ENDPOINT is not a valid URL ({e})"))
        });
    }
    if env.arc_agent_installed() {
        return Url::parse(DEFAULT_ENDPOINT)
            .map_err(|e| IdentityError::Config(format!("default HIMDS endpoint: {e}")));
    }
    Err(IdentityError::Config(format!(
        "Azure Arc: no HIMDS endpoint: set [auth] identity_endpoint or IDENTITY_ENDPOINT, or install the Arc agent ({} not found)",
        env.arc_agent_binary.display()
    )))
}

fn default_token_dir(env: &Env) -> Result<PathBuf, IdentityError> {
    crate::platform::arc_token_dir(env).map_err(IdentityError::Config)
}

/// Status codes worth retrying (PROTOCOL.md §1: 404, 410, 429, 5xx and
/// connection errors). The 401 challenge is part of an attempt, not a retry.
fn retryable(e: &IdentityError) -> bool {
    match e {
        IdentityError::ArcNotRunning { .. } | IdentityError::Unreachable { .. } => true,
        IdentityError::Status { status, .. } => matches!(*status, 404 | 410 | 429 | 500..=599),
        _ => false,
    }
}

#[async_trait::async_trait]
impl TokenSource for ArcSource {
    async fn fetch(&self, audience: &str) -> Result<AccessToken, IdentityError> {
        let url = self.token_url(audience);
        let mut retry = RetryState::new(&self.retry);
        // Bounded: RetryState refuses after max_attempts.
        super::with_retries(
            "HIMDS",
            &self.endpoint,
            || self.attempt(&url),
            |e| retryable(e).then(|| retry.next_wait(None)).flatten(),
        )
        .await
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "arc",
            endpoint: self.endpoint.to_string(),
        }
    }

    async fn instance_metadata(&self) -> Result<Option<serde_json::Value>, IdentityError> {
        let url = super::instance::url(&self.instance_base, super::instance::HIMDS_API_VERSION);
        super::instance::fetch(&self.http, &url).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::AuthMethod;

    fn auth() -> AuthConfig {
        AuthConfig::with_method(AuthMethod::Arc)
    }

    #[test]
    fn endpoint_precedence() {
        let http = crate::http::metadata_client().unwrap();
        let mut a = auth();
        let env = Env::empty().with("IDENTITY_ENDPOINT", "http://127.0.0.1:1/env");
        let s = ArcSource::from_config(&a, &env, http.clone()).unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:1/env");
        #[cfg(unix)]
        assert_eq!(s.token_dir, PathBuf::from(crate::platform::ARC_TOKEN_DIR));
        a.identity_endpoint = Some(Url::parse("http://127.0.0.1:2/cfg").unwrap());
        a.test_arc_token_dir = Some(PathBuf::from("/tmp/x"));
        let s = ArcSource::from_config(&a, &env, http.clone()).unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:2/cfg");
        assert_eq!(s.token_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn default_endpoint_only_when_agent_installed() {
        let http = crate::http::metadata_client().unwrap();
        let err = ArcSource::from_config(&auth(), &Env::empty(), http.clone())
            .err()
            .unwrap();
        assert!(matches!(err, IdentityError::Config(_)), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("himds");
        std::fs::create_dir(&bin).unwrap();
        let mut env = Env::empty();
        env.arc_agent_binary = bin;
        let s = ArcSource::from_config(&auth(), &env, http).unwrap();
        assert_eq!(s.endpoint.as_str(), DEFAULT_ENDPOINT);
    }

    #[test]
    fn token_url_carries_api_version_and_resource() {
        let s = ArcSource::new(
            Url::parse("http://127.0.0.1:9/metadata/identity/oauth2/token").unwrap(),
            PathBuf::from("/x"),
            crate::http::metadata_client().unwrap(),
        );
        assert_eq!(
            s.token_url("https://vault.azure.net").as_str(),
            "http://127.0.0.1:9/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https%3A%2F%2Fvault.azure.net"
        );
    }

    #[test]
    fn permission_denied_message() {
        let e = map_challenge_error(
            Path::new("/var/opt/azcmagent/tokens/a.key"),
            "http://localhost:40342/",
            ChallengeError::Permission,
        );
        let msg = e.to_string();
        assert!(matches!(e, IdentityError::ChallengePermission { .. }));
        assert!(msg.contains("/var/opt/azcmagent/tokens/a.key"), "{msg}");
        assert!(msg.contains("root") && msg.contains("himds"), "{msg}");
    }

    #[test]
    fn status_errors_quote_codes_only() {
        let e = status_error(
            "http://h/",
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_request","error_description":"CANARY"}"#,
        );
        let msg = e.to_string();
        assert!(msg.contains("HTTP 400 (invalid_request)"), "{msg}");
        assert!(!msg.contains("CANARY"));
        let e = status_error("http://h/", StatusCode::BAD_GATEWAY, br#"{"error":"x y"}"#);
        assert!(!e.to_string().contains("x y"));
        assert!(retryable(&e));
        assert!(!retryable(&status_error("h", StatusCode::BAD_REQUEST, b"")));
    }
}
