//! The Azure Arc challenge (PROTOCOL.md §1): parse `WWW-Authenticate:
//! Basic realm=<path>` and read the key file it names, after checking —
//! BEFORE opening anything — that the path is one the Arc agent could have
//! written: absolute, no `..`, its parent is *lexically* the token
//! directory, a `.key` name, a regular file (lstat, not a symlink), at most
//! [`MAX_CHALLENGE_FILE_BYTES`]. On Unix the token directory is opened once
//! (`O_DIRECTORY|O_NOFOLLOW`) and the key is opened relative to it with
//! `O_NOFOLLOW|O_NONBLOCK`, so a symlink or FIFO swapped in after the check
//! is refused without blocking; the opened file must be the very inode that
//! was checked (same device and inode as the lstat). Any local process can listen on the HIMDS
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

// Windows: the same checks by Windows rules (case-insensitive directory
// match, reparse points refused by handle) in platform/windows/challenge.rs.
#[cfg(windows)]
pub use crate::platform::windows::challenge::{read_key, validate};

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

/// The lexical checks: absolute, no `.`/`..`, a `.key` name directly in
/// `token_dir` (compared as written, not resolved).
#[cfg(unix)]
fn check_name(path: &Path, token_dir: &Path) -> Result<(), ChallengeError> {
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
    if path.parent() != Some(token_dir) {
        return refuse(&format!(
            "it is not directly inside the Arc token directory {}",
            token_dir.display()
        ));
    }
    Ok(())
}

/// Check `path` against `token_dir` without opening it.
#[cfg(unix)]
pub fn validate(path: &Path, token_dir: &Path) -> Result<(), ChallengeError> {
    check_name(path, token_dir)?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ChallengeError::Permission);
        }
        Err(e) => return Err(refused_io(&e)),
    };
    check_meta(meta.file_type().is_file(), meta.len())
}

#[cfg(unix)]
fn refused_io(e: &std::io::Error) -> ChallengeError {
    ChallengeError::Refused(format!("it cannot be inspected ({})", e.kind()))
}

#[cfg(unix)]
fn check_meta(is_file: bool, len: u64) -> Result<(), ChallengeError> {
    if !is_file {
        return Err(ChallengeError::Refused(
            "it is not a regular file (symlinks and FIFOs are refused)".to_owned(),
        ));
    }
    if len > MAX_CHALLENGE_FILE_BYTES {
        return Err(ChallengeError::Refused(format!(
            "it is larger than {MAX_CHALLENGE_FILE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Validate, then read the key file exactly as stored (no trimming).
#[cfg(unix)]
pub fn read_key(path: &Path, token_dir: &Path) -> Result<SecretString, ChallengeError> {
    check_name(path, token_dir)?;
    let file = open_checked(path, token_dir)?;
    let mut bytes = Vec::with_capacity(MAX_CHALLENGE_FILE_BYTES as usize);
    (&file)
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

/// Open the token directory once, lstat the name in it, open it relative
/// to the directory without following a link or blocking on a FIFO, and
/// require the opened inode to be the one inspected.
#[cfg(unix)]
fn open_checked(path: &Path, token_dir: &Path) -> Result<std::fs::File, ChallengeError> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{Mode, SFlag};
    let errno = |e: nix::errno::Errno| io_error(std::io::Error::from(e));
    let name = path
        .file_name()
        .ok_or_else(|| ChallengeError::Refused("the path has no file name".to_owned()))?;
    let dir = nix::fcntl::open(
        token_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::EACCES => ChallengeError::Permission,
        e => ChallengeError::Refused(format!(
            "the Arc token directory cannot be opened as a real directory ({})",
            std::io::Error::from(e).kind()
        )),
    })?;
    let is_reg =
        |mode: u32| SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
    let lst =
        nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| match e {
            nix::errno::Errno::EACCES => ChallengeError::Permission,
            e => refused_io(&std::io::Error::from(e)),
        })?;
    check_meta(
        is_reg(lst.st_mode),
        u64::try_from(lst.st_size).unwrap_or(u64::MAX),
    )?;
    let fd = nix::fcntl::openat(
        &dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => {
            ChallengeError::Refused("it was swapped for a symlink after the check".to_owned())
        }
        e => errno(e),
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(errno)?;
    if (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino) || !is_reg(st.st_mode) {
        return Err(ChallengeError::Refused(
            "the file changed between the check and the open".to_owned(),
        ));
    }
    check_meta(true, u64::try_from(st.st_size).unwrap_or(u64::MAX))?;
    Ok(std::fs::File::from(fd))
}

/// Map an I/O error to the challenge error (permission → [`ChallengeError::Permission`]).
pub(crate) fn io_error(e: std::io::Error) -> ChallengeError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        ChallengeError::Permission
    } else {
        ChallengeError::Io(e.kind().to_string())
    }
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
    fn token_dir_reached_through_a_symlinked_directory_is_refused() {
        // The parent must be the token directory as written (issue 13):
        // no resolving, so no alias of it is accepted either.
        #[cfg(unix)]
        {
            let dir = tempfile::tempdir().unwrap();
            let real = dir.path().join("real");
            std::fs::create_dir(&real).unwrap();
            let alias = dir.path().join("alias");
            std::os::unix::fs::symlink(&real, &alias).unwrap();
            write(&real.join("a.key"), b"k");
            assert!(matches!(
                validate(&alias.join("a.key"), &real),
                Err(ChallengeError::Refused(_))
            ));
            assert!(read_key(&real.join("a.key"), &real).is_ok());
            // A token directory that is itself a symlink is refused too.
            assert!(matches!(
                read_key(&alias.join("a.key"), &alias),
                Err(ChallengeError::Refused(_))
            ));
        }
    }

    #[cfg(unix)]
    #[test]
    fn fifo_and_symlink_flipped_into_the_token_dir_are_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let outside = dir.path().join("shadow");
        write(&outside, b"NOT-THE-KEY");
        let key = tokens.join("k.key");
        // Deterministic: a FIFO, then a symlink.
        nix::unistd::mkfifo(&key, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            read_key(&key, &tokens),
            Err(ChallengeError::Refused(_))
        ));
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(&outside, &key).unwrap();
        assert!(matches!(
            read_key(&key, &tokens),
            Err(ChallengeError::Refused(_))
        ));
        std::fs::remove_file(&key).unwrap();
        // Race, bounded: a thread keeps flipping a regular file, a FIFO and
        // a symlink into place while the key is read; every read is the
        // genuine key or a refusal, and the loop finishes (no blocking open).
        let (genuine, fifo, link) = (tokens.join("g"), tokens.join("f"), tokens.join("l"));
        write(&genuine, b"GENUINE");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        std::fs::hard_link(&genuine, &key).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (stop, key) = (stop.clone(), key.clone());
            let sources = [fifo.clone(), link.clone(), genuine.clone()];
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 1_000_000 {
                    let tmp = key.with_extension("tmp");
                    let src = &sources[i % 3];
                    if src.extension().is_none() && std::fs::symlink_metadata(src).is_ok() {
                        let _ = std::fs::hard_link(src, &tmp).or_else(|_| {
                            std::os::unix::fs::symlink(std::fs::read_link(src)?, &tmp)
                        });
                        let _ = std::fs::rename(&tmp, &key);
                    }
                    i += 1;
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = {
            let (key, tokens) = (key.clone(), tokens.clone());
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    match read_key(&key, &tokens) {
                        Ok(k) => assert_eq!(k.expose_secret(), "GENUINE"),
                        Err(ChallengeError::Refused(_) | ChallengeError::Io(_)) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
                let _ = tx.send(());
            })
        };
        let finished = rx.recv_timeout(std::time::Duration::from_secs(60));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        assert!(
            finished.is_ok(),
            "a read blocked (FIFO opened without O_NONBLOCK?)"
        );
        reader.join().unwrap();
    }

    #[test]
    fn permission_mapping() {
        let e = io_error(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(e, ChallengeError::Permission);
        let e = io_error(std::io::Error::from(std::io::ErrorKind::Other));
        assert!(matches!(e, ChallengeError::Io(_)));
    }
}
