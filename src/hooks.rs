//! `on_change` hooks: each distinct command runs once per round after all
//! files are written, via `sh -c`, with `KVSYNC_CHANGED` listing the changed
//! paths, under a timeout after which its process group is killed.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook `{command}` exited with {status}; stderr tail:\n{stderr_tail}")]
    Failed {
        command: String,
        status: String,
        stderr_tail: String,
    },
    #[error("hook `{command}` timed out after {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
    #[error("hook `{command}` could not start: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// Run `command` with `KVSYNC_CHANGED` set to `changed` (newline-separated).
pub async fn run(command: &str, changed: &[PathBuf], timeout: Duration) -> Result<(), HookError> {
    let _ = (command, changed, timeout);
    unimplemented!("hooks::run")
}
