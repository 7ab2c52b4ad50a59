//! TLS client (see e2e_servers.rs).
