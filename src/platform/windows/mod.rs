//! Windows side of [`crate::platform`]: console events and the service
//! control manager instead of signals, `cmd.exe` hooks in a Job object,
//! ACLs instead of modes, `%ProgramData%` / `%ProgramFiles%` paths.
//! (`crate::write` is `write.rs` here; `challenge.rs` is the Arc key-file
//! reader.)
#![allow(unsafe_code)]

pub mod certstore;
pub mod challenge;
pub mod eventlog;
pub mod httpsys;
pub mod keyacl;
pub mod security;
pub mod service;

use std::ffi::OsStr;
use std::os::windows::ffi::OsStrExt;
use std::path::PathBuf;

use tokio::sync::{mpsc, watch};
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, TerminateJobObject,
};

use crate::agent::Triggers;
use crate::env::Env;

pub use certstore::store_sync;

/// Config file below `%ProgramData%`.
pub const CONFIG_SUBPATH: &str = r"kvsync\kvsync.toml";
/// Log directory below `%ProgramData%` (the service's rolling file log).
pub const LOG_SUBDIR: &str = r"kvsync\logs";
/// The Arc agent's HIMDS binary below `%ProgramFiles%` (PROTOCOL.md §1).
pub const ARC_AGENT_SUBPATH: &str = r"AzureConnectedMachineAgent\himds.exe";
/// The Arc agent's token directory below `%ProgramData%` (PROTOCOL.md §1).
pub const ARC_TOKEN_SUBDIR: &str = r"AzureConnectedMachineAgent\Tokens";
/// What to do about "access denied" on the Arc challenge file.
pub const ARC_PERMISSION_HINT: &str = "run kvsync as LocalSystem (the service's default account) or add its account to the local \"Hybrid agent extension applications\" group";

/// Variables of the system a hook needs beyond `hooks::HOOK_ENV_KEPT` (names
/// compared case-insensitively): without them cmd.exe and PowerShell cannot
/// find the system, temp directories or their modules. None holds a secret.
pub const HOOK_ENV_SYSTEM: &[&str] = &[
    "SystemRoot",
    "SystemDrive",
    "windir",
    "ComSpec",
    "PATHEXT",
    "TEMP",
    "TMP",
    "ProgramData",
    "ProgramFiles",
    "ProgramFiles(x86)",
    "ProgramW6432",
    "CommonProgramFiles",
    "ALLUSERSPROFILE",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
    "COMPUTERNAME",
    "USERNAME",
    "USERDOMAIN",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
    "OS",
    "PSModulePath",
];

/// A NUL-terminated UTF-16 copy of `s` for Win32 calls.
pub fn wide(s: impl AsRef<OsStr>) -> Vec<u16> {
    s.as_ref().encode_wide().chain(std::iter::once(0)).collect()
}

/// An environment variable, its name compared case-insensitively (as
/// Windows does).
fn env_var<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.var(name).or_else(|| env.var_ignore_case(name))
}

/// `%ProgramData%` (default `C:\ProgramData`).
pub fn program_data(env: &Env) -> PathBuf {
    PathBuf::from(env_var(env, "ProgramData").unwrap_or(r"C:\ProgramData"))
}

/// `%ProgramFiles%` (default `C:\Program Files`).
pub fn program_files(env: &Env) -> PathBuf {
    PathBuf::from(env_var(env, "ProgramFiles").unwrap_or(r"C:\Program Files"))
}

/// `%ProgramData%\kvsync\kvsync.toml`.
pub fn default_config_path(env: &Env) -> PathBuf {
    program_data(env).join(CONFIG_SUBPATH)
}

/// `%ProgramData%\kvsync\logs`.
pub fn log_dir(env: &Env) -> PathBuf {
    program_data(env).join(LOG_SUBDIR)
}

/// `%ProgramFiles%\AzureConnectedMachineAgent\himds.exe`.
pub fn arc_agent_binary(env: &Env) -> PathBuf {
    program_files(env).join(ARC_AGENT_SUBPATH)
}

/// `%ProgramData%\AzureConnectedMachineAgent\Tokens`.
pub fn arc_token_dir(env: &Env) -> Result<PathBuf, String> {
    match env_var(env, "ProgramData") {
        Some(base) => Ok(PathBuf::from(base).join(ARC_TOKEN_SUBDIR)),
        None => Err("Azure Arc: %ProgramData% is not set".to_owned()),
    }
}

/// Console events: Ctrl-C, Close, Shutdown → stop; Ctrl-Break → reload (the
/// console's SIGHUP). The service feeds its own [`Triggers`]
/// ([`service`]).
pub fn signal_triggers() -> std::io::Result<Triggers> {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
    let mut c = ctrl_c()?;
    let mut close = ctrl_close()?;
    let mut shutdown = ctrl_shutdown()?;
    let mut brk = ctrl_break()?;
    let (reload_tx, reload) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = brk.recv() => { let _ = reload_tx.send(()); }
                Some(()) = c.recv() => { let _ = stop_tx.send(true); }
                Some(()) = close.recv() => { let _ = stop_tx.send(true); }
                Some(()) = shutdown.recv() => { let _ = stop_tx.send(true); }
                else => break,
            }
        }
    });
    Ok(Triggers { reload, stop })
}

/// Unix owners do not exist here (`acl` replaces `owner`).
pub fn lookup_user(name: &str) -> Result<u32, String> {
    Err(format!(
        "user \"{name}\": owner is not supported on Windows; use acl"
    ))
}

/// Unix groups do not exist here (`acl` replaces `group`).
pub fn lookup_group(name: &str) -> Result<u32, String> {
    Err(format!(
        "group \"{name}\": group is not supported on Windows; use acl"
    ))
}

/// Milliseconds since boot, in microseconds (only used for systemd).
pub fn monotonic_usec() -> u64 {
    // SAFETY: plain FFI call without arguments.
    unsafe { windows_sys::Win32::System::SystemInformation::GetTickCount64() * 1000 }
}

/// There is no systemd notification socket on Windows: the service reports
/// to the SCM itself ([`service`]).
pub struct NotifySocket;

impl NotifySocket {
    pub fn new(_path: &str) -> Option<Self> {
        None
    }

    pub fn send(&self, _message: &str) -> std::io::Result<()> {
        Ok(())
    }
}

/// `cmd.exe` from the system directory (not searched in PATH or the
/// current directory).
fn cmd_exe() -> PathBuf {
    let root = std::env::var_os("SystemRoot").unwrap_or_else(|| r"C:\Windows".into());
    PathBuf::from(root).join("System32").join("cmd.exe")
}

/// The command running a string hook: `cmd.exe /D /S /C "COMMAND"`. With
/// `/S` cmd strips exactly the outer quotes and runs the rest as typed, so
/// the command line is passed raw (no MSVC-style re-quoting).
pub fn shell_command(command: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(cmd_exe());
    c.raw_arg(format!("/D /S /C \"{command}\""));
    c
}

/// `CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW`: console events meant for
/// kvsync do not reach the hook, and no console window opens.
pub fn isolate_hook(cmd: &mut tokio::process::Command) {
    use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW};
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
}

/// A Job object holding the hook and every process it starts; a timeout
/// terminates the whole job. (The job is not kill-on-close: processes a
/// finished hook left running, e.g. a service it started, survive, as on
/// Unix.)
pub struct HookGuard {
    job: HANDLE,
}

// SAFETY: a job handle may be used from any thread.
unsafe impl Send for HookGuard {}
// SAFETY: TerminateJobObject is thread-safe; the handle is never mutated.
unsafe impl Sync for HookGuard {}

impl HookGuard {
    /// Create a job and put the freshly spawned hook in it. A process the
    /// hook starts in its first instants, before the assignment, escapes
    /// the job (cmd.exe parses its command line first, so in practice none).
    pub fn attach(child: &tokio::process::Child) -> std::io::Result<Self> {
        // SAFETY: no attributes, no name.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if job.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let guard = HookGuard { job };
        let Some(process) = child.raw_handle() else {
            return Ok(guard);
        };
        // SAFETY: both handles are open; the process handle is owned by
        // `child`, alive for the call.
        if unsafe { AssignProcessToJobObject(job, process as HANDLE) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(guard)
    }

    /// Terminate every process in the job.
    pub fn kill(&self) {
        // SAFETY: the job handle is open until drop.
        if unsafe { TerminateJobObject(self.job, 1) } == 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not terminate the hook's job object");
        }
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        // SAFETY: closed once, here.
        unsafe { CloseHandle(self.job) };
    }
}

pub use service::{
    install as service_install, run_service as service_run, uninstall as service_uninstall,
};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::hooks::{Hook, HookError, run};

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn string_hooks_run_in_cmd_with_the_environment() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out.txt");
        let hook = Hook::shell(format!("echo %KVSYNC_CHANGED%> \"{}\"", out.display()));
        run(&hook, &[PathBuf::from(r"C:\a b.txt")], LONG)
            .await
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.trim_end(), r"C:\a b.txt");
        let err = run(&Hook::shell("echo oops 1>&2 & exit 3"), &[], LONG)
            .await
            .unwrap_err();
        let HookError::Failed {
            status,
            stderr_tail,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert!(status.contains('3'), "{status}");
        assert!(stderr_tail.contains("oops"), "{stderr_tail}");
    }

    #[tokio::test]
    async fn argv_hooks_run_the_program_directly() {
        let cmd = super::cmd_exe().display().to_string();
        let err = run(&Hook::argv([cmd.as_str(), "/D", "/C", "exit 4"]), &[], LONG)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HookError::Failed { status, .. } if status.contains('4')),
            "{err:?}"
        );
        let err = run(&Hook::argv([r"C:\no\such\program.exe"]), &[], LONG)
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::Spawn { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn timeout_terminates_the_job() {
        let hook = Hook::shell("for /L %i in (1,0,2) do @rem")
            .with_timeout(Some(Duration::from_millis(500)));
        let err = run(&hook, &[], LONG).await.unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }), "{err:?}");
    }

    #[test]
    fn default_paths_follow_the_environment() {
        let env = crate::env::Env::empty()
            .with("PROGRAMDATA", r"D:\Data")
            .with("ProgramFiles", r"D:\Programs");
        assert_eq!(
            super::default_config_path(&env),
            PathBuf::from(r"D:\Data\kvsync\kvsync.toml")
        );
        assert_eq!(
            super::arc_token_dir(&env).unwrap(),
            PathBuf::from(r"D:\Data\AzureConnectedMachineAgent\Tokens")
        );
        assert_eq!(
            super::arc_agent_binary(&env),
            PathBuf::from(r"D:\Programs\AzureConnectedMachineAgent\himds.exe")
        );
        assert!(super::arc_token_dir(&crate::env::Env::empty()).is_err());
    }
}
