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
//! [`sync`] runs one round of it (`kvsync once`: all or nothing); [`agent`]
//! repeats it (`kvsync run`: per hook group, with list-based change
//! detection in [`sync::changes`]); [`commands`] wraps both for `main`.
//! Invariants that hold across stages:
//!
//! * Secret values and tokens live in [`secrecy::SecretString`] (or
//!   [`secret::SecretBytes`]) and never reach a log line, an error message or
//!   `--dry-run` output.
//! * A round renders every file before writing any; only [`mod@write`] creates or
//!   replaces files, atomically, never world-readable while being written.
//! * Every endpoint (HIMDS, IMDS, the Entra authority, the vault) is taken
//!   from configuration or the injected [`env::Env`], so tests point each at a
//!   loopback fake.

pub mod agent;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod config;
pub mod env;
pub mod hooks;
pub mod http;
pub mod identity;
pub mod logging;
pub mod platform;
pub mod render;
pub mod secret;
pub mod store;
pub mod sync;
pub mod vault;
// The file writer is per platform with one API: Unix below `write/`,
// Windows in `platform/windows/write.rs` (ACLs instead of modes).
#[cfg_attr(windows, path = "platform/windows/write.rs")]
pub mod write;

/// Where the README's troubleshooting section lives; appended to errors.
pub const TROUBLESHOOTING: &str = "see README.md#troubleshooting";
