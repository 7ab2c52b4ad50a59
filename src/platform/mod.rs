//! Everything that differs between Unix and Windows, one concern per item,
//! behind one set of names. Each OS module ([`unix`] / `windows`) provides
//! the same items; the rest of kvsync calls `crate::platform::…` and holds no
//! `cfg(unix)`/`cfg(windows)` of its own (the file writer is the exception:
//! `crate::write` *is* `platform/windows/write.rs` on Windows, the same API).
//!
//! | concern | Unix | Windows |
//! |---|---|---|
//! | default paths | `/etc/kvsync`, `/opt/azcmagent`, `/var/opt/azcmagent/tokens` | `%ProgramData%\kvsync`, `%ProgramFiles%\AzureConnectedMachineAgent`, `%ProgramData%\AzureConnectedMachineAgent\Tokens` |
//! | stop / reload | SIGTERM, SIGINT / SIGHUP | console Ctrl-C/Close/Shutdown; the service's Stop, Shutdown, Preshutdown / Paramchange ([`windows::service`]) |
//! | hooks | `sh -c`, own process group, `killpg` | `cmd.exe /D /S /C`, a Job object killed on timeout |
//! | file protection | `mode`, `owner`, `group` | `acl` (protected DACL) |
//! | Arc challenge file | `O_NOFOLLOW`, lstat | `FILE_FLAG_OPEN_REPARSE_POINT`, checked by handle |
//! | service manager | systemd `sd_notify` | the SCM ([`windows::service`]) |
//!
//! Adding a platform concern (e.g. the Windows certificate store): a module
//! under `platform/windows/`, a Unix counterpart (or an "unsupported" error)
//! in `unix.rs`, and a re-export here.

pub mod acl;

#[cfg(unix)]
pub mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub use windows::*;

/// Name of this platform's file-protection keys, for config errors that
/// point at the other one.
pub const fn protection_keys() -> &'static str {
    if cfg!(windows) {
        "acl"
    } else {
        "mode/owner/group"
    }
}
