//! kvsync's integration tests, one binary (as ripgrep does): every module
//! below is one area; `support` holds the shared helpers (the emulator
//! harness that runs the real `kvsync` binary, a scripted HTTP server for
//! what the emulator can't produce, and the real-server end-to-end helpers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

mod agent;
mod app;
mod boot;
mod certs;
mod certs_pipeline;
mod change_detection;
mod config;
mod config_exec;
mod deploy_recipes;
mod docs;
mod e2e_servers;
#[cfg(unix)]
mod exec;
mod hooks_argv;
mod hostile;
mod identity_arc;
mod identity_e2e;
mod identity_sources;
mod once;
mod outside_values;
mod parsers;
mod render_golden;
mod round;
mod select_publish;
mod vault_client;
