//! The Arc challenge file on Windows (PROTOCOL.md §1, issue 11): before
//! anything is opened, the path must be absolute, free of `.`/`..`, name a
//! `.key` file without an alternate data stream, and lie *directly* in
//! `%ProgramData%\AzureConnectedMachineAgent\Tokens` (compared
//! case-insensitively after normalising separators); then it is opened with
//! `FILE_FLAG_OPEN_REPARSE_POINT` (a symlink or junction is opened as
//! itself, never followed) and the *handle* must be a regular file, not a
//! reparse point, at most [`MAX_CHALLENGE_FILE_BYTES`]. Refusals use the
//! same [`ChallengeError::Refused`] as on Linux.
#![allow(unsafe_code)]

use std::io::Read;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::{Component, Path, Prefix};

use secrecy::SecretString;
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_READ, GetFileInformationByHandle,
};

use crate::identity::challenge::{ChallengeError, MAX_CHALLENGE_FILE_BYTES, io_error};

fn refuse<T>(why: &str) -> Result<T, ChallengeError> {
    Err(ChallengeError::Refused(why.to_owned()))
}

/// A path's text for comparison: `/` → `\`, no trailing separator,
/// lower-cased (Windows paths are case-insensitive).
pub fn normalise(path: &Path) -> String {
    let s = path.to_string_lossy().replace('/', "\\");
    let s = s.trim_end_matches('\\');
    s.to_lowercase()
}

/// Check `path` against `token_dir` without opening it.
pub fn validate(path: &Path, token_dir: &Path) -> Result<(), ChallengeError> {
    let mut components = path.components();
    match components.next() {
        Some(Component::Prefix(p)) if matches!(p.kind(), Prefix::Disk(_)) => {}
        Some(Component::Prefix(_)) => {
            return refuse(
                "the path is not a plain drive path (UNC and \\\\?\\ paths are refused)",
            );
        }
        _ => return refuse("the path is not absolute"),
    }
    if !path.is_absolute() {
        return refuse("the path is not absolute");
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || path
            .to_string_lossy()
            .replace('/', "\\")
            .split('\\')
            .any(|c| c == "." || c == "..")
    {
        return refuse("the path contains `..` or `.` components");
    }
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return refuse("the path has no file name");
    };
    if name.contains(':') {
        return refuse("the file name names an alternate data stream");
    }
    if !name.to_ascii_lowercase().ends_with(".key") || name.len() <= ".key".len() {
        return refuse("the file name does not end in `.key`");
    }
    let Some(parent) = path.parent() else {
        return refuse("the path has no parent directory");
    };
    if normalise(parent) != normalise(token_dir) {
        return refuse(&format!(
            "it is not directly inside the Arc token directory {}",
            token_dir.display()
        ));
    }
    Ok(())
}

/// The attributes and size of an open handle.
fn handle_info(file: &std::fs::File) -> std::io::Result<(u32, u64)> {
    // SAFETY: zero-initialised plain data, filled by the call.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open for the duration of the call.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle() as HANDLE, &mut info) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let size = (u64::from(info.nFileSizeHigh) << 32) | u64::from(info.nFileSizeLow);
    Ok((info.dwFileAttributes, size))
}

/// Validate, open without following a reparse point, check the handle,
/// then read the key file exactly as stored (no trimming).
pub fn read_key(path: &Path, token_dir: &Path) -> Result<SecretString, ChallengeError> {
    validate(path, token_dir)?;
    // The lstat equivalent first (a directory cannot be opened as a file,
    // which would read as "access denied"); the handle check below is the
    // one that counts.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() || m.file_type().is_symlink() => {
            return refuse("it is not a regular file (symlinks and junctions are refused)");
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ChallengeError::Permission);
        }
        Err(e) => return refuse(&format!("it cannot be inspected ({})", e.kind())),
    }
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_READ)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ChallengeError::Permission);
        }
        Err(e) => return refuse(&format!("it cannot be inspected ({})", e.kind())),
    };
    let (attributes, size) = handle_info(&file).map_err(io_error)?;
    if attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return refuse("it is not a regular file (symlinks and junctions are refused)");
    }
    if attributes & FILE_ATTRIBUTE_DIRECTORY != 0 {
        return refuse("it is not a regular file (symlinks are refused)");
    }
    if size > MAX_CHALLENGE_FILE_BYTES {
        return refuse(&format!(
            "it is larger than {MAX_CHALLENGE_FILE_BYTES} bytes"
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut file)
        .take(MAX_CHALLENGE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_CHALLENGE_FILE_BYTES {
        return refuse(&format!(
            "it grew past {MAX_CHALLENGE_FILE_BYTES} bytes while being read"
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ChallengeError::Refused("the key file is not UTF-8 text".to_owned()))?;
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use secrecy::ExposeSecret;

    const DIR: &str = r"C:\ProgramData\AzureConnectedMachineAgent\Tokens";

    fn refused(p: &str) -> bool {
        matches!(
            validate(Path::new(p), Path::new(DIR)),
            Err(ChallengeError::Refused(_))
        )
    }

    #[test]
    fn path_checks() {
        assert!(validate(Path::new(&format!(r"{DIR}\a.key")), Path::new(DIR)).is_ok());
        // Case-insensitive, either separator, trailing separator on the dir.
        assert!(
            validate(
                Path::new(r"c:/programdata/AZURECONNECTEDMACHINEAGENT/tokens/B.KEY"),
                Path::new(&format!(r"{DIR}\"))
            )
            .is_ok()
        );
        assert!(refused(r"C:\Windows\win.ini"));
        assert!(refused(r"C:\ProgramData\AzureConnectedMachineAgent\x.key"));
        assert!(refused(&format!(r"{DIR}\..\x.key")));
        assert!(refused(&format!(r"{DIR}\sub\x.key")));
        assert!(refused(&format!(r"{DIR}\.\x.key")));
        assert!(refused(&format!(r"{DIR}\a.txt")));
        assert!(refused(&format!(r"{DIR}\.key")));
        assert!(refused(&format!(r"{DIR}\a:b.key")));
        assert!(refused(r"relative\a.key"));
        assert!(refused(
            r"\ProgramData\AzureConnectedMachineAgent\Tokens\a.key"
        ));
        assert!(refused(&format!(r"\\?\{DIR}\a.key")));
        assert!(refused(r"\\server\share\Tokens\a.key"));
    }

    #[test]
    fn reads_exact_bytes_and_checks_size() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("a.key");
        std::fs::write(&ok, b" key\n").unwrap();
        assert_eq!(read_key(&ok, dir.path()).unwrap().expose_secret(), " key\n");
        let big = dir.path().join("big.key");
        std::fs::write(&big, [b'k'; 4097]).unwrap();
        assert!(matches!(
            read_key(&big, dir.path()),
            Err(ChallengeError::Refused(_))
        ));
        let max = dir.path().join("max.key");
        std::fs::write(&max, [b'k'; 4096]).unwrap();
        assert!(read_key(&max, dir.path()).is_ok());
        let sub = dir.path().join("d.key");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            read_key(&sub, dir.path()),
            Err(ChallengeError::Refused(_))
        ));
        let missing = dir.path().join("missing.key");
        assert!(matches!(
            read_key(&missing, dir.path()),
            Err(ChallengeError::Refused(_))
        ));
    }
}
