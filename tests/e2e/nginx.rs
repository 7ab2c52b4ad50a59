//! nginx harness (see e2e_servers.rs).
