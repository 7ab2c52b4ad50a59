//! kvsync's integration tests, one binary (as ripgrep does): every module
//! below is one area; `support` holds the shared helpers (the emulator
//! harness that runs the real `kvsync` binary, a scripted HTTP server for
//! what the emulator can't produce, and the real-server end-to-end helpers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

mod agent;
mod certs;
mod certs_pipeline;
mod change_detection;
mod config;
mod deploy_recipes;
mod docs;
mod e2e_servers;
mod hooks_argv;
mod identity_arc;
mod identity_e2e;
mod identity_sources;
mod once;
mod render_golden;
mod round;
mod vault_client;
