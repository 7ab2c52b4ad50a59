//! `on_change` hooks: each distinct command runs once per round after all
//! files are written, via `sh -c`, with `KVSYNC_CHANGED` listing the changed
//! paths, under a timeout after which its process group is killed.
//!
//! Contract of a hook run:
//!
//! * `sh -c COMMAND`, the agent's environment plus `KVSYNC_CHANGED`: the
//!   changed paths of this round that name this hook, joined by `\n` (no
//!   trailing newline; a path containing a newline is ambiguous — don't).
//! * stdin is `/dev/null`; stdout lines are logged at `info`, stderr lines at
//!   `warn` (a hook's output is the operator's own, not kvsync's secrets);
//!   the last [`STDERR_TAIL_LINES`] lines / [`STDERR_TAIL_BYTES`] bytes of
//!   stderr are returned in [`HookError::Failed`].
//! * The hook runs in its own process group. On timeout the whole group
//!   (the shell and everything it started) gets `SIGKILL`.
//! * When the shell exits, background processes it left behind are *not*
//!   killed (a hook may legitimately start a daemon); kvsync stops reading
//!   their output after [`PIPE_DRAIN_GRACE`].

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Name of the environment variable listing changed paths.
pub const CHANGED_ENV: &str = "KVSYNC_CHANGED";
/// How much of stderr a failure report keeps: enough for a typical error
/// message (nginx's `-t` output is a few lines), short enough for a log line.
pub const STDERR_TAIL_LINES: usize = 20;
pub const STDERR_TAIL_BYTES: usize = 2048;
/// Longest line logged as one record; longer output is split (bounds memory
/// for a hook that prints without newlines).
const MAX_LINE_BYTES: usize = 4096;
/// After the shell exits, how long to keep reading output still held open by
/// processes it left in the background.
pub const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(1);

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

/// The value of `KVSYNC_CHANGED` for `changed`.
pub fn changed_env(changed: &[PathBuf]) -> OsString {
    let mut out = Vec::new();
    for (i, p) in changed.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(p.as_os_str().as_bytes());
    }
    OsString::from_vec(out)
}

/// Names of the environment variables of a `verify` command.
pub const CANDIDATE_ENV: &str = "KVSYNC_CANDIDATE";
pub const DESTINATION_ENV: &str = "KVSYNC_DESTINATION";

/// Run `command` with `KVSYNC_CHANGED` set to `changed` (newline-separated).
pub async fn run(command: &str, changed: &[PathBuf], timeout: Duration) -> Result<(), HookError> {
    run_with_env(command, changed, &[], timeout).await
}

/// Run a file's `verify` command against its candidate: same contract as a
/// hook, plus `KVSYNC_CANDIDATE` (the staged temp file, next to the
/// destination) and `KVSYNC_DESTINATION`; `KVSYNC_CHANGED` is the destination.
pub async fn verify(
    command: &str,
    candidate: &Path,
    destination: &Path,
    timeout: Duration,
) -> Result<(), HookError> {
    let env = [
        (CANDIDATE_ENV, candidate.as_os_str()),
        (DESTINATION_ENV, destination.as_os_str()),
    ];
    run_with_env(command, &[destination.to_path_buf()], &env, timeout).await
}

async fn run_with_env(
    command: &str,
    changed: &[PathBuf],
    env: &[(&str, &OsStr)],
    timeout: Duration,
) -> Result<(), HookError> {
    let mut child = spawn(command, changed, env)?;
    let pgid = child.id();
    let out = child.stdout.take().map(|s| {
        let command = command.to_string();
        tokio::spawn(read_lines(
            s,
            move |l| tracing::info!(hook = %command, "{l}"),
        ))
    });
    let err = child.stderr.take().map(|s| {
        let command = command.to_string();
        tokio::spawn(read_lines(
            s,
            move |l| tracing::warn!(hook = %command, "{l}"),
        ))
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            kill_group(pgid);
            return Err(HookError::Spawn {
                command: command.to_string(),
                source,
            });
        }
        Err(_) => {
            kill_group(pgid);
            // Reap the shell; SIGKILL cannot be ignored, so this ends.
            let _ = child.wait().await;
            abort(out);
            abort(err);
            return Err(HookError::Timeout {
                command: command.to_string(),
                timeout,
            });
        }
    };
    let _ = drain(out).await;
    let tail = drain(err).await.unwrap_or_default();
    if status.success() {
        tracing::info!(hook = %command, changed = changed.len(), "hook ran");
        Ok(())
    } else {
        Err(HookError::Failed {
            command: command.to_string(),
            status: status.to_string(),
            stderr_tail: tail,
        })
    }
}

/// Variables a hook inherits from kvsync's environment; everything else
/// (proxy credentials, cloud tokens, ...) is dropped.
pub const HOOK_ENV_KEPT: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "NOTIFY_SOCKET"];
/// Comma-separated names of further variables to pass to hooks (set in
/// kvsync's environment, e.g. the unit's `Environment=`).
pub const HOOK_ENV_PASSTHROUGH: &str = "KVSYNC_HOOK_ENV";

/// The environment a hook starts with: [`HOOK_ENV_KEPT`], every
/// `KVSYNC_*` variable and the names listed in [`HOOK_ENV_PASSTHROUGH`].
pub fn hook_environment() -> Vec<(OsString, OsString)> {
    let extra: Vec<String> = std::env::var(HOOK_ENV_PASSTHROUGH)
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str().is_some_and(|k| {
                HOOK_ENV_KEPT.contains(&k)
                    || k.starts_with("KVSYNC_")
                    || extra.iter().any(|e| e == k)
            })
        })
        .collect()
}

/// `sh -c command` in its own process group, stdin null, output piped,
/// with a minimal environment ([`hook_environment`]).
fn spawn(
    command: &str,
    changed: &[PathBuf],
    env: &[(&str, &OsStr)],
) -> Result<tokio::process::Child, HookError> {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(hook_environment())
        .env(CHANGED_ENV, changed_env(changed))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            command: command.to_string(),
            source,
        })
}

type Reader = Option<tokio::task::JoinHandle<String>>;

fn abort(r: Reader) {
    if let Some(h) = r {
        h.abort();
    }
}

/// Wait (at most [`PIPE_DRAIN_GRACE`]) for a reader to reach EOF.
async fn drain(r: Reader) -> Option<String> {
    let mut h = r?;
    match tokio::time::timeout(PIPE_DRAIN_GRACE, &mut h).await {
        Ok(Ok(tail)) => Some(tail),
        _ => {
            h.abort();
            None
        }
    }
}

fn kill_group(pgid: Option<u32>) {
    let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // The group id equals the shell's pid (process_group(0)).
    if let Err(e) = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        tracing::warn!(pgid = pid, error = %e, "could not kill the hook's process group");
    }
}

/// Read `r` to EOF, calling `log` per line; return the bounded tail.
async fn read_lines<R: AsyncRead + Unpin>(mut r: R, log: impl Fn(&str)) -> String {
    let mut tail = Tail::default();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || line.len() >= MAX_LINE_BYTES {
                let s = String::from_utf8_lossy(&line);
                log(&s);
                tail.push(&s);
                line.clear();
                if b == b'\n' {
                    continue;
                }
            }
            line.push(b);
        }
    }
    if !line.is_empty() {
        let s = String::from_utf8_lossy(&line);
        log(&s);
        tail.push(&s);
    }
    tail.render()
}

#[derive(Default)]
struct Tail(std::collections::VecDeque<String>);

impl Tail {
    fn push(&mut self, line: &str) {
        self.0.push_back(line.to_string());
        while self.0.len() > STDERR_TAIL_LINES {
            self.0.pop_front();
        }
    }

    fn render(&self) -> String {
        let all = Vec::from_iter(self.0.iter().map(String::as_str)).join("\n");
        if all.len() <= STDERR_TAIL_BYTES {
            return all;
        }
        let mut start = all.len() - STDERR_TAIL_BYTES;
        while !all.is_char_boundary(start) {
            start += 1;
        }
        all[start..].to_string()
    }
}

#[cfg(test)]
mod tests;
