//! kvsync-fake: a local Azure emulator for kvsync's development, tests, demo
//! and benchmarks. Real loopback servers, following ../shared/PROTOCOL.md:
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
//! (Skeleton: signatures agreed between modules; bodies to be filled in.)
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
