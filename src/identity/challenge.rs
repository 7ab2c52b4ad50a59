//! The Azure Arc challenge (PROTOCOL.md §1): parse `WWW-Authenticate:
//! Basic realm=<path>` and read the key file it names, after checking —
//! BEFORE opening anything — that the path is one the Arc agent could have
//! written: absolute, no `..`, its directory (resolved) is exactly the token
//! directory, a `.key` name, a regular file (lstat, not a symlink), at most
//! [`MAX_CHALLENGE_FILE_BYTES`]. Any local process can listen on the HIMDS
//! port first and name `/etc/shadow`; this module is what stops kvsync from
//! mailing that file to it. It never logs or returns the file's contents
//! except as the [`SecretString`] handed to the caller.

#[cfg(unix)]
use std::io::Read;
use std::path::PathBuf;
#[cfg(unix)]
use std::path::{Component, Path};

#[cfg(unix)]
use secrecy::SecretString;

/// Largest challenge file we read (PROTOCOL.md §1, all SDKs agree).
pub const MAX_CHALLENGE_FILE_BYTES: u64 = 4096;

/// Why a challenge could not be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum ChallengeError {
    /// The path failed a check; the file was not opened. Holds the reason.
    Refused(String),
    /// The file is fine but unreadable for this user.
    Permission,
    /// Another I/O failure while reading (kind only).
    Io(String),
}

/// The realm path of a `Basic realm=<path>` challenge (scheme and `realm`
/// case-insensitive, quotes tolerated). `None` for anything else.
pub fn parse_realm(header: &str) -> Option<PathBuf> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim_start();
    let (key, value) = rest.split_once('=')?;
    if !key.trim().eq_ignore_ascii_case("realm") {
        return None;
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    (!value.is_empty()).then(|| PathBuf::from(value))
}

// Windows: the same checks by Windows rules (case-insensitive directory
// match, reparse points refused by handle) in platform/windows/challenge.rs.
#[cfg(windows)]
pub use crate::platform::windows::challenge::{read_key, validate};

/// Check `path` against `token_dir` without opening it.
#[cfg(unix)]
pub fn validate(path: &Path, token_dir: &Path) -> Result<(), ChallengeError> {
    let refuse = |why: &str| Err(ChallengeError::Refused(why.to_owned()));
    if !path.is_absolute() {
        return refuse("the path is not absolute");
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return refuse("the path contains `..` or `.` components");
    }
    if path.extension().is_none_or(|ext| ext != "key") {
        return refuse("the file name does not end in `.key`");
    }
    let Some(parent) = path.parent() else {
        return refuse("the path has no parent directory");
    };
    // Resolve the DIRECTORY, not the file: a symlinked file must still be
    // caught by the lstat below, not followed here.
    let (Ok(parent), Ok(expected)) = (parent.canonicalize(), token_dir.canonicalize()) else {
        return refuse("its directory cannot be resolved to the Arc token directory");
    };
    if parent != expected {
        return refuse(&format!(
            "it is not directly inside the Arc token directory {}",
            expected.display()
        ));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ChallengeError::Permission);
        }
        Err(e) => return refuse(&format!("it cannot be inspected ({})", e.kind())),
    };
    if !meta.file_type().is_file() {
        return refuse("it is not a regular file (symlinks are refused)");
    }
    if meta.len() > MAX_CHALLENGE_FILE_BYTES {
        return refuse(&format!(
            "it is larger than {MAX_CHALLENGE_FILE_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Validate, then read the key file exactly as stored (no trimming).
#[cfg(unix)]
pub fn read_key(path: &Path, token_dir: &Path) -> Result<SecretString, ChallengeError> {
    validate(path, token_dir)?;
    let mut file = open_nofollow(path).map_err(io_error)?;
    // Re-check on the open handle: the file may have been swapped between
    // the lstat and the open.
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() || meta.len() > MAX_CHALLENGE_FILE_BYTES {
        return Err(ChallengeError::Refused(
            "the file changed between the check and the open".to_owned(),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(MAX_CHALLENGE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_CHALLENGE_FILE_BYTES {
        return Err(ChallengeError::Refused(format!(
            "it grew past {MAX_CHALLENGE_FILE_BYTES} bytes while being read"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ChallengeError::Refused("the key file is not UTF-8 text".to_owned()))?;
    Ok(SecretString::from(text))
}

/// Map an I/O error to the challenge error (permission → [`ChallengeError::Permission`]).
pub(crate) fn io_error(e: std::io::Error) -> ChallengeError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        ChallengeError::Permission
    } else {
        ChallengeError::Io(e.kind().to_string())
    }
}

#[cfg(unix)]
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn realm_parsing_is_liberal() {
        let p = |s: &str| parse_realm(s).map(|p| p.display().to_string());
        assert_eq!(p("Basic realm=/a/b.key").as_deref(), Some("/a/b.key"));
        assert_eq!(p("basic REALM=\"/a/b.key\"").as_deref(), Some("/a/b.key"));
        assert_eq!(
            p("  BASIC   realm = /a/b.key ").as_deref(),
            Some("/a/b.key")
        );
        assert_eq!(p("Bearer realm=/a/b.key"), None);
        assert_eq!(p("Basic"), None);
        assert_eq!(p("Basic realm="), None);
        assert_eq!(p("Basic foo=/a"), None);
    }

    fn write(path: &Path, bytes: &[u8]) {
        #[allow(clippy::disallowed_methods)]
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_exact_bytes_and_checks_size() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("a.key");
        write(&ok, b" key with spaces\n");
        assert_eq!(
            read_key(&ok, dir.path()).unwrap().expose_secret(),
            " key with spaces\n"
        );
        let max = dir.path().join("max.key");
        write(&max, &[b'k'; 4096]);
        assert!(read_key(&max, dir.path()).is_ok());
        let big = dir.path().join("big.key");
        write(&big, &[b'k'; 4097]);
        assert!(matches!(
            read_key(&big, dir.path()),
            Err(ChallengeError::Refused(_))
        ));
    }

    #[test]
    fn refuses_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("tokens");
        std::fs::create_dir(&sub).unwrap();
        let outside = dir.path().join("x.key");
        write(&outside, b"CANARY");
        let refused = |p: &Path| matches!(validate(p, &sub), Err(ChallengeError::Refused(_)));
        assert!(refused(Path::new("/etc/shadow")));
        assert!(refused(Path::new("relative/a.key")));
        assert!(refused(&sub.join("..").join("x.key")));
        assert!(refused(&outside));
        let txt = sub.join("a.txt");
        write(&txt, b"x");
        assert!(refused(&txt));
        let missing = sub.join("missing.key");
        assert!(refused(&missing));
        let nested = sub.join("d.key");
        std::fs::create_dir(&nested).unwrap();
        assert!(refused(&nested));
        #[cfg(unix)]
        {
            let link = sub.join("link.key");
            std::os::unix::fs::symlink(&outside, &link).unwrap();
            assert!(refused(&link));
            assert!(matches!(
                read_key(&link, &sub),
                Err(ChallengeError::Refused(_))
            ));
        }
    }

    #[test]
    fn token_dir_reached_through_a_symlinked_directory_is_accepted() {
        // Canonicalising the directory (not the file) means a symlinked
        // *directory* path still matches the real token directory.
        #[cfg(unix)]
        {
            let dir = tempfile::tempdir().unwrap();
            let real = dir.path().join("real");
            std::fs::create_dir(&real).unwrap();
            let alias = dir.path().join("alias");
            std::os::unix::fs::symlink(&real, &alias).unwrap();
            write(&real.join("a.key"), b"k");
            assert!(validate(&alias.join("a.key"), &real).is_ok());
        }
    }

    #[test]
    fn permission_mapping() {
        let e = io_error(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(e, ChallengeError::Permission);
        let e = io_error(std::io::Error::from(std::io::ErrorKind::Other));
        assert!(matches!(e, ChallengeError::Io(_)));
    }
}
