//! `on_change` hooks: each distinct command runs once per round after all
//! files are written, with `KVSYNC_CHANGED` listing the changed paths, under
//! a timeout after which it and everything it started are killed.
//!
//! Contract of a hook run:
//!
//! * A string runs through the platform shell (`sh -c COMMAND` on Unix,
//!   `cmd.exe /D /S /C "COMMAND"` on Windows); an array runs its first
//!   element directly with the rest as arguments, no shell
//!   ([`HookCommand`]).
//! * The agent's environment plus `KVSYNC_CHANGED`: the changed paths of
//!   this round that name this hook, joined by `\n` (no trailing newline; a
//!   path containing a newline is ambiguous — don't).
//! * stdin is null; stdout lines are logged at `info`, stderr lines at
//!   `warn` (a hook's output is the operator's own, not kvsync's secrets);
//!   the last [`STDERR_TAIL_LINES`] lines / [`STDERR_TAIL_BYTES`] bytes of
//!   stderr are returned in [`HookError::Failed`].
//! * The hook runs in its own process group (Unix) or Job object (Windows).
//!   On timeout — the file's `hook_timeout`, else `[agent] hook_timeout` —
//!   the whole group/job (the hook and everything it started) is killed
//!   ([`crate::platform::HookGuard`]).
//! * When the hook exits, background processes it left behind are *not*
//!   killed (a hook may legitimately start a daemon); kvsync stops reading
//!   their output after [`PIPE_DRAIN_GRACE`].

use std::ffi::{OsStr, OsString};
use std::fmt;
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

/// What a hook runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookCommand {
    /// A command line for the platform shell (`sh -c` / `cmd.exe /C`).
    Shell(String),
    /// A program and its arguments, run directly (no shell, no quoting).
    Argv(Vec<String>),
}

/// An `on_change` or `verify` hook: the command and the file's
/// `hook_timeout` (when set; else `[agent] hook_timeout` applies). Files
/// sharing a hook agree on its timeout (config check), so equal commands
/// are equal hooks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hook {
    pub command: HookCommand,
    pub timeout: Option<Duration>,
}

impl Hook {
    /// A shell command with the default timeout.
    pub fn shell(command: impl Into<String>) -> Self {
        Hook {
            command: HookCommand::Shell(command.into()),
            timeout: None,
        }
    }

    /// A program and its arguments with the default timeout.
    pub fn argv<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Hook {
            command: HookCommand::Argv(argv.into_iter().map(Into::into).collect()),
            timeout: None,
        }
    }

    /// The command line of a string hook (`None` for an argv hook).
    pub fn as_shell(&self) -> Option<&str> {
        match &self.command {
            HookCommand::Shell(s) => Some(s),
            HookCommand::Argv(_) => None,
        }
    }

    /// The same hook with `timeout`.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

/// As written in the config: the string, or the array as JSON
/// (`["powershell.exe", "-File", "x.ps1"]`).
impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.command {
            HookCommand::Shell(s) => f.write_str(s),
            HookCommand::Argv(argv) => {
                f.write_str(&serde_json::to_string(argv).map_err(|_| fmt::Error)?)
            }
        }
    }
}

/// The value of `KVSYNC_CHANGED` for `changed`.
pub fn changed_env(changed: &[PathBuf]) -> OsString {
    let mut out = OsString::new();
    for (i, p) in changed.iter().enumerate() {
        if i > 0 {
            out.push("\n");
        }
        out.push(p.as_os_str());
    }
    out
}

/// Names of the environment variables of a `verify` command.
pub const CANDIDATE_ENV: &str = "KVSYNC_CANDIDATE";
pub const DESTINATION_ENV: &str = "KVSYNC_DESTINATION";

/// Run `hook` with `KVSYNC_CHANGED` set to `changed` (newline-separated),
/// under the hook's own timeout or `default_timeout`.
pub async fn run(
    hook: &Hook,
    changed: &[PathBuf],
    default_timeout: Duration,
) -> Result<(), HookError> {
    run_with_env(hook, changed, &[], default_timeout).await
}

/// Run a file's `verify` command against its candidate: same contract as a
/// hook, plus `KVSYNC_CANDIDATE` (the staged temp file, next to the
/// destination) and `KVSYNC_DESTINATION`; `KVSYNC_CHANGED` is the destination.
pub async fn verify(
    hook: &Hook,
    candidate: &Path,
    destination: &Path,
    default_timeout: Duration,
) -> Result<(), HookError> {
    let env = [
        (CANDIDATE_ENV, candidate.as_os_str()),
        (DESTINATION_ENV, destination.as_os_str()),
    ];
    run_with_env(hook, &[destination.to_path_buf()], &env, default_timeout).await
}

async fn run_with_env(
    hook: &Hook,
    changed: &[PathBuf],
    env: &[(&str, &OsStr)],
    default_timeout: Duration,
) -> Result<(), HookError> {
    let timeout = hook.timeout.unwrap_or(default_timeout);
    let command = hook.to_string();
    let command = command.as_str();
    let (mut child, guard) = spawn(hook, command, changed, env)?;
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
            guard.kill();
            return Err(HookError::Spawn {
                command: command.to_string(),
                source,
            });
        }
        Err(_) => {
            guard.kill();
            // Reap the hook; a kill cannot be ignored, so this ends.
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
                    // Windows names are case-insensitive; what cmd.exe and
                    // PowerShell need to start (SystemRoot, ComSpec, ...).
                    || crate::platform::HOOK_ENV_SYSTEM
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(k))
            })
        })
        .collect()
}

/// The hook's process (shell or program) in its own process group / Job
/// object, stdin null, output piped, with a minimal environment
/// ([`hook_environment`]).
fn spawn(
    hook: &Hook,
    command: &str,
    changed: &[PathBuf],
    env: &[(&str, &OsStr)],
) -> Result<(tokio::process::Child, crate::platform::HookGuard), HookError> {
    let spawn_error = |source| HookError::Spawn {
        command: command.to_string(),
        source,
    };
    let mut cmd = match &hook.command {
        HookCommand::Shell(line) => crate::platform::shell_command(line),
        HookCommand::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Err(spawn_error(std::io::Error::other("empty argv")));
            };
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    };
    cmd.env_clear()
        .envs(hook_environment())
        .env(CHANGED_ENV, changed_env(changed))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    crate::platform::isolate_hook(&mut cmd);
    let child = cmd.spawn().map_err(spawn_error)?;
    match crate::platform::HookGuard::attach(&child) {
        Ok(guard) => Ok((child, guard)),
        Err(source) => {
            // Not contained: do not let it run unsupervised.
            let mut child = child;
            let _ = child.start_kill();
            Err(spawn_error(source))
        }
    }
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

#[cfg(all(test, unix))]
mod tests;
