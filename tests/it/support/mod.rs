//! Helpers shared by the integration tests.

pub mod e2e;
pub mod harness;
pub mod mock;
