//! The subcommands: thin wrappers over the pipeline that turn results into
//! exit codes (SPEC.md: 0 success, 1 sync failed, 2 bad usage or config).

pub mod check;
pub mod once;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::env::Env;

pub const EXIT_OK: u8 = 0;
pub const EXIT_SYNC_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// `-c`, else `KVSYNC_CONFIG`, else the platform default.
pub fn config_path(explicit: Option<&Path>, env: &Env) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = env.var("KVSYNC_CONFIG") {
        return PathBuf::from(p);
    }
    PathBuf::from(crate::config::DEFAULT_CONFIG_PATH)
}

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
