//! kvsync keeps files on a host in step with secrets and certificates held in
//! Azure Key Vault, authenticating with the host's managed identity.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! config ──► identity ──► vault ──► certs ──► render ──► write ──► hooks
//! (check)    (token)      (fetch)   (PEM/PFX) (bytes)    (atomic)  (verify,
//!                                                                  on_change)
//! ```
//!
//! How it is wired, top to bottom (an arrow only ever points down):
//!
//! * `main` parses the command line ([`cli`]) and calls [`app::run`].
//! * [`app`]: the one setup of every command and of the agent's reload
//!   (config, logging, HTTP clients, identity, token cache, vault client) and
//!   the one error → exit-code map ([`app::exit_code`]).
//! * `commands`: `check`, `once`, `whoami`, reporting what a round did.
//! * `exec`: `kvsync exec`, a supervised command whose environment carries
//!   rendered secrets, driven by the agent's loop.
//! * `fanout`: directories of files kvsync names (selections, IIS CCS), with
//!   a manifest of what it wrote.
//! * `agent`: `kvsync run`: schedule, signals, reloads, health and metrics
//!   around the round; owns the `sync::RoundState` kept across rounds and
//!   reloads.
//! * `sync`: the one round (`Engine::round`: fetch → certificates →
//!   render → stage → verify → commit → hooks) with its policy (all or
//!   nothing for `once`, per hook group for `run`), its typed outcome and
//!   failure kinds, and list-based change detection (`sync::changes`).
//! * The stages: [`config`] (TOML → checked `Config`), [`identity`]
//!   (tokens from Arc HIMDS, IMDS, workload identity), [`vault`] (Key Vault
//!   client; [`vault::address`] owns every vault-URL rule), [`certs`],
//!   [`render`], `write`, `hooks`.
//! * Shared leaves: [`env`](mod@env), [`http`], [`secret`], `time` (the one
//!   `unix_now` and the range outside times must be in), `logging`.
//!
//! Public: what `main`, the integration tests, xtask and the fuzz targets
//! need (the parsers of config, templates, Key Vault and token JSON,
//! certificates and claims stay reachable); the rest is `pub(crate)`.
//!
//! Invariants that hold across stages:
//!
//! * Secret values and tokens live in [`secrecy::SecretString`] (or
//!   [`secret::SecretBytes`]) and never reach a log line, an error message or
//!   `--dry-run` output.
//! * A round renders every file before writing any; only `write` creates or
//!   replaces files, atomically, never world-readable while being written.
//! * Every endpoint (HIMDS, IMDS, the Entra authority, the vault) is taken
//!   from configuration or the injected [`env::Env`], so tests point each at a
//!   loopback fake.
//! * No value from outside (timestamps, sizes, counts) reaches arithmetic
//!   or formatting unchecked: nothing from a server can panic kvsync.

pub(crate) mod agent;
pub mod app;
pub mod certs;
pub mod cli;
pub(crate) mod commands;
pub mod config;
pub mod env;
pub mod exec;
pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod hardening;
pub(crate) mod hooks;
pub mod http;
pub mod identity;
pub(crate) mod logging;
pub mod platform;
pub mod render;
pub mod secret;
pub mod store;
pub(crate) mod sync;
pub(crate) mod time;
pub mod vault;
// The file writer is per platform with one API: Unix below `write/`,
// Windows in `platform/windows/write.rs` (ACLs instead of modes).
#[cfg_attr(windows, path = "platform/windows/write.rs")]
pub(crate) mod write;

/// Where the README's troubleshooting section lives; appended to errors.
pub const TROUBLESHOOTING: &str = "see README.md#troubleshooting";
