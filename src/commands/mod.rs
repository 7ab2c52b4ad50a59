//! The subcommands: thin wrappers over [`crate::app`] (setup) and
//! [`crate::sync::Engine::round`] that report results; each returns
//! `Result<(), AppError>` and `main` maps that to the exit code through
//! [`crate::app::exit`] (SPEC.md: 0 success, 1 sync failed, 2 bad usage or
//! config).

pub mod check;
pub mod exec;
pub mod once;
pub mod whoami;
