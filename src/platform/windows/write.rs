//! The ONLY code that creates or replaces files — Windows edition of
//! `src/write/mod.rs`, with the same API (this file *is* `crate::write` on
//! Windows). SPEC.md "Writing files", by Windows means:
//!
//! * Unchanged bytes and DACL → no write at all.
//! * Same bytes, different DACL → the DACL is fixed in place.
//! * Otherwise: missing parent directories are created, each with the
//!   file's protected DACL (entries inherited by what is created inside);
//!   a temp file is created in the destination directory (`CREATE_NEW`, no
//!   sharing), the protected DACL is set on its handle *before* any byte
//!   is written, the bytes are written and flushed (`FlushFileBuffers`),
//!   and it is moved over the destination with
//!   `MoveFileExW(MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)`,
//!   retried briefly while a reader holds the destination open without
//!   delete sharing (IIS, an editor). `ReplaceFileW` is not used: it would
//!   merge the old file's ACL into the new one.
//! * A symlink or junction at the destination is replaced (the move
//!   replaces the link itself), never followed.
//! * The DACL: the `acl` list (account names or SIDs; R/M/F), protected
//!   (no inherited entries); absent → SYSTEM and Administrators full
//!   control, nobody else.
//!
//! This module never logs or returns file contents.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::windows::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION, GENERIC_READ, GENERIC_WRITE,
};
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE, MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH,
    MoveFileExW, READ_CONTROL, WRITE_DAC,
};

use crate::config::FileSpec;
use crate::platform::acl::{AclEntry, default_acl};
use crate::platform::windows::security::{self, ObjectKind, ResolvedAcl};
use crate::platform::windows::wide;
use crate::secret::SecretBytes;

#[derive(Clone, Debug)]
pub struct Target {
    pub path: PathBuf,
    /// Unix protection, ignored on Windows (kept so code shared with Unix
    /// builds the same `Target`; the config refuses these keys here).
    #[allow(dead_code)]
    pub mode: u32,
    #[allow(dead_code)]
    pub uid: Option<u32>,
    #[allow(dead_code)]
    pub gid: Option<u32>,
    #[allow(dead_code)]
    pub dir_mode: u32,
    #[allow(dead_code)]
    pub follow_symlinks: bool,
    /// The file's `acl`; empty = the default (SYSTEM, Administrators).
    pub acl: Vec<AclEntry>,
}

impl Target {
    /// Where and how a configured file is written.
    pub fn from_spec(spec: &FileSpec) -> Self {
        Target {
            path: spec.path.clone(),
            mode: spec.mode,
            uid: None,
            gid: None,
            dir_mode: spec.dir_mode,
            follow_symlinks: spec.follow_symlinks,
            acl: spec.acl.clone(),
        }
    }

    fn entries(&self) -> Vec<AclEntry> {
        if self.acl.is_empty() {
            default_acl()
        } else {
            self.acl.clone()
        }
    }

    fn resolved(&self, kind: ObjectKind) -> Result<ResolvedAcl, WriteError> {
        security::resolve_acl(&self.entries(), kind).map_err(werr(&self.path, "resolve the acl"))
    }
}

#[path = "../../write/outcome.rs"]
mod outcome;
use outcome::werr;
pub use outcome::{Change, WriteError};

/// Open an existing object without following a reparse point, with the
/// rights to read and change its DACL (and its bytes when `data`).
fn open_existing(path: &Path, data: bool) -> std::io::Result<File> {
    let mut access = READ_CONTROL | WRITE_DAC;
    if data {
        access |= GENERIC_READ;
    }
    OpenOptions::new()
        .access_mode(access)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Create a new file for tests of the DACL code: `CREATE_NEW`, with
/// `READ_CONTROL | WRITE_DAC`.
#[cfg(test)]
pub fn open_for_dacl(path: &Path) -> std::io::Result<File> {
    // write(true): std checks it for create_new; access_mode sets the rights.
    OpenOptions::new()
        .write(true)
        .access_mode(GENERIC_READ | GENERIC_WRITE | READ_CONTROL | WRITE_DAC)
        .create_new(true)
        .open(path)
}

/// What is at the destination now, read without following a link.
enum Existing {
    Missing,
    /// A symlink, junction or other reparse point: replace it.
    Replaceable,
    Regular(File),
}

fn existing(path: &Path) -> Result<Existing, WriteError> {
    let lmeta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(e) => return Err(werr(path, "inspect the destination")(e)),
    };
    if lmeta.file_type().is_symlink() || lmeta.file_type().is_symlink_dir() {
        return Ok(Existing::Replaceable);
    }
    if lmeta.is_dir() {
        return Err(werr(path, "inspect the destination")(
            std::io::Error::other("it is a directory; remove it or choose another path"),
        ));
    }
    let file = open_existing(path, true).map_err(werr(path, "open the destination"))?;
    let meta = file
        .metadata()
        .map_err(werr(path, "inspect the destination"))?;
    if !meta.is_file() || meta.file_type().is_symlink() {
        return Ok(Existing::Replaceable);
    }
    Ok(Existing::Regular(file))
}

fn same_bytes(file: &mut File, bytes: &[u8], path: &Path) -> Result<bool, WriteError> {
    let len = file
        .metadata()
        .map_err(werr(path, "inspect the destination"))?
        .len();
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    let mut current = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len() + 1));
    file.read_to_end(&mut current)
        .map_err(werr(path, "read the destination"))?;
    Ok(current.as_slice() == bytes)
}

/// What writing `bytes` to `target` would do, without doing it.
pub fn plan(target: &Target, bytes: &[u8]) -> Result<Change, WriteError> {
    let acl = target.resolved(ObjectKind::File)?;
    decide(target, bytes, &acl)
}

fn decide(target: &Target, bytes: &[u8], acl: &ResolvedAcl) -> Result<Change, WriteError> {
    Ok(match existing(&target.path)? {
        Existing::Missing => Change::Created,
        Existing::Replaceable => Change::Updated,
        Existing::Regular(mut file) => {
            if !same_bytes(&mut file, bytes, &target.path)? {
                Change::Updated
            } else if security::read(&file).is_ok_and(|back| back.matches(acl)) {
                Change::Unchanged
            } else {
                Change::Metadata
            }
        }
    })
}

/// The state of a destination before a commit, for rolling it back.
pub struct Backup {
    pub path: PathBuf,
    /// `None` when the destination did not exist (or was not a regular
    /// file): rolling back removes the new file.
    pub previous: Option<Previous>,
    target: Target,
}

pub struct Previous {
    pub bytes: SecretBytes,
}

impl Backup {
    /// Put the previous contents back (atomically, like any write, with the
    /// file's DACL), or remove a file that did not exist before.
    pub fn restore(self, _dir_mode: u32) -> Result<Change, WriteError> {
        match self.previous {
            Some(p) => apply(&self.target, p.bytes.expose()),
            None => {
                std::fs::remove_file(&self.path).map_err(werr(&self.path, "remove"))?;
                Ok(Change::Updated)
            }
        }
    }
}

/// A temp file next to the destination, removed on drop unless moved.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

enum Action {
    /// Move the candidate over the destination.
    Replace(TempFile),
    /// Fix the DACL of the destination in place.
    Fix(ResolvedAcl),
}

/// A candidate file written and flushed next to its destination, not yet
/// moved over it. Dropping it removes the temp file.
pub struct Staged {
    target: Target,
    change: Change,
    action: Action,
}

impl Staged {
    /// Path of the candidate (for `verify` commands). For a DACL-only
    /// change, the destination itself.
    pub fn candidate_path(&self) -> &Path {
        match &self.action {
            Action::Replace(tmp) => &tmp.path,
            Action::Fix(_) => &self.target.path,
        }
    }

    #[allow(dead_code)] // the Unix writer's API; unused by Windows callers
    pub fn change(&self) -> Change {
        self.change
    }

    /// Move over the destination (write-through) or fix the DACL in place.
    pub fn commit(self) -> Result<Change, WriteError> {
        self.commit_without_dir_sync()
    }

    /// Same as [`Staged::commit`]: `MOVEFILE_WRITE_THROUGH` already makes
    /// the move durable, there is no directory to flush.
    pub fn commit_without_dir_sync(self) -> Result<Change, WriteError> {
        let path = &self.target.path;
        match self.action {
            Action::Fix(acl) => {
                let file = open_existing(path, false)
                    .map_err(werr(path, "open the destination to fix its acl"))?;
                let dacl = security::build_dacl(&acl).map_err(werr(path, "build the acl"))?;
                security::apply(&file, &dacl).map_err(werr(path, "set the acl"))?;
                // A file system that does not keep the descriptor it was
                // given (Wine, some network shares) reads back something
                // else after every repair: the DACL is re-applied each
                // round, but the file does not count as changed (no hook).
                if !security::read(&file).is_ok_and(|back| back.matches(&acl)) {
                    tracing::debug!(path = %path.display(), "the file system does not keep DACLs as set; acl re-applied, file unchanged");
                    return Ok(Change::Unchanged);
                }
            }
            Action::Replace(mut tmp) => {
                replace_with_retry(&tmp.path, path, &REPLACE_RETRY, |_| {})
                    .map_err(werr(path, "move the new file over the destination"))?;
                tmp.keep = true;
            }
        }
        Ok(self.change)
    }

    /// [`Staged::commit`], returning what was there before so the caller can
    /// roll back a round that failed later.
    pub fn commit_with_backup(self) -> Result<(Change, Backup), WriteError> {
        let path = self.target.path.clone();
        let previous = match existing(&path)? {
            Existing::Regular(mut file) => {
                let mut buf = Vec::new();
                file.read_to_end(&mut buf)
                    .map_err(werr(&path, "read the destination"))?;
                Some(Previous {
                    bytes: SecretBytes::new(buf),
                })
            }
            _ => None,
        };
        let target = self.target.clone();
        let change = self.commit()?;
        Ok((
            change,
            Backup {
                path,
                previous,
                target,
            },
        ))
    }
}

/// How often and how long a move is retried while the destination is in
/// use.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_wait: Duration,
    pub max_wait: Duration,
}

/// ~4 s in total: long enough for a reader to finish with a certificate
/// file, short enough not to stall a round.
pub const REPLACE_RETRY: RetryPolicy = RetryPolicy {
    attempts: 12,
    first_wait: Duration::from_millis(20),
    max_wait: Duration::from_millis(640),
};

fn is_in_use(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().and_then(|c| u32::try_from(c).ok()),
        Some(ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION | ERROR_ACCESS_DENIED)
    )
}

/// `MoveFileExW(from, to, REPLACE_EXISTING | WRITE_THROUGH)`, retried with
/// doubling waits while `to` is in use (sharing/lock violation, or access
/// denied, which is what a pending delete or a reader without
/// `FILE_SHARE_DELETE` gives). `on_retry(n)` is called before the n-th
/// wait (tests use it to release the file).
pub fn replace_with_retry(
    from: &Path,
    to: &Path,
    policy: &RetryPolicy,
    mut on_retry: impl FnMut(u32),
) -> std::io::Result<()> {
    let (wfrom, wto) = (wide(from), wide(to));
    let mut wait = policy.first_wait;
    let mut attempt = 1;
    loop {
        // SAFETY: both strings are NUL-terminated and outlive the call.
        let ok = unsafe {
            MoveFileExW(
                wfrom.as_ptr(),
                wto.as_ptr(),
                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
            )
        };
        if ok != 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if attempt >= policy.attempts || !is_in_use(&e) {
            return Err(e);
        }
        on_retry(attempt);
        std::thread::sleep(wait);
        wait = (wait * 2).min(policy.max_wait);
        attempt += 1;
    }
}

/// Remove temp files a killed run left next to `target`
/// (`.NAME.kvsync-*.tmp`); returns how many.
pub fn sweep_stale_temps(target: &Target) -> usize {
    let Some(name) = target
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return 0;
    };
    let prefix = format!(".{name}.kvsync-");
    let Ok(entries) = std::fs::read_dir(parent_dir(&target.path)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix)
                && n.ends_with(".tmp")
                && e.file_type().is_ok_and(|t| t.is_file())
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Nothing to do on Windows (the move is write-through); kept for the
/// shared API.
pub fn sync_parent_dir(_path: &Path) -> Result<(), WriteError> {
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create missing ancestors of `path`, each with the protected DACL.
fn create_parents(target: &Target) -> Result<(), WriteError> {
    let dir = parent_dir(&target.path);
    let mut missing = Vec::new();
    for a in dir.ancestors() {
        if a.as_os_str().is_empty() || a.exists() {
            break;
        }
        missing.push(a);
    }
    if missing.is_empty() {
        return Ok(());
    }
    let acl = target.resolved(ObjectKind::Directory)?;
    let dacl = security::build_dacl(&acl).map_err(werr(&target.path, "build the acl"))?;
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(werr(d, "create the directory")(e)),
        }
        let handle = OpenOptions::new()
            .access_mode(READ_CONTROL | WRITE_DAC)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
            .open(d)
            .map_err(werr(d, "open the new directory"))?;
        security::apply(&handle, &dacl).map_err(werr(d, "set the directory acl"))?;
    }
    Ok(())
}

/// Create the candidate: `CREATE_NEW`, unshared, in `dir`.
fn create_candidate(dir: &Path, dest: &Path) -> Result<(File, TempFile), WriteError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(format!(".{name}.kvsync-{:016x}.tmp", rand::random::<u64>()));
        match OpenOptions::new()
            .write(true)
            .access_mode(GENERIC_READ | GENERIC_WRITE | READ_CONTROL | WRITE_DAC | DELETE)
            .share_mode(0)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((f, TempFile { path, keep: false })),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(werr(dest, "create a temp file next to the destination")(e)),
        }
    }
    Err(werr(dest, "create a temp file next to the destination")(
        last.unwrap_or_else(|| std::io::Error::other("no free temp name")),
    ))
}

/// Prepare a write; `Ok(None)` when nothing needs writing. A DACL-only
/// change is fixed in place by [`Staged::commit`].
pub fn stage(target: &Target, bytes: &[u8]) -> Result<Option<Staged>, WriteError> {
    let path = &target.path;
    let acl = target.resolved(ObjectKind::File)?;
    let change = decide(target, bytes, &acl)?;
    match change {
        Change::Unchanged => return Ok(None),
        Change::Metadata => {
            return Ok(Some(Staged {
                target: target.clone(),
                change,
                action: Action::Fix(acl),
            }));
        }
        Change::Created | Change::Updated => {}
    }
    create_parents(target)?;
    let (mut file, tmp) = create_candidate(parent_dir(path), path)?;
    // The DACL before the first byte: the candidate is never readable by
    // anyone the acl does not name.
    let dacl = security::build_dacl(&acl).map_err(werr(path, "build the acl"))?;
    security::apply(&file, &dacl).map_err(werr(&tmp.path, "set the acl on the temp file"))?;
    file.write_all(bytes)
        .map_err(werr(&tmp.path, "write the temp file"))?;
    // File::sync_all is FlushFileBuffers.
    file.sync_all()
        .map_err(werr(&tmp.path, "flush the temp file"))?;
    drop(file);
    Ok(Some(Staged {
        target: target.clone(),
        change,
        action: Action::Replace(tmp),
    }))
}

/// `stage` then `commit`.
pub fn apply(target: &Target, bytes: &[u8]) -> Result<Change, WriteError> {
    match stage(target, bytes)? {
        Some(staged) => staged.commit(),
        None => Ok(Change::Unchanged),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::platform::acl::parse_entry;

    fn target(path: PathBuf) -> Target {
        Target {
            path,
            mode: 0o600,
            uid: None,
            gid: None,
            dir_mode: 0o755,
            follow_symlinks: false,
            acl: vec![
                parse_entry("S-1-5-18:F").unwrap(),
                parse_entry("S-1-5-32-545:R").unwrap(),
            ],
        }
    }

    #[test]
    fn create_then_unchanged_then_update() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path().join("sub").join("a.pem"));
        assert_eq!(apply(&t, b"one").unwrap(), Change::Created);
        assert_eq!(std::fs::read(&t.path).unwrap(), b"one");
        assert_eq!(apply(&t, b"one").unwrap(), Change::Unchanged);
        assert_eq!(apply(&t, b"two").unwrap(), Change::Updated);
        assert_eq!(std::fs::read(&t.path).unwrap(), b"two");
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(t.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Whether the file carries the acl can only be read back on
        // Windows (Wine ignores file DACLs); the DACL built for it is
        // checked in security::tests.
    }

    #[test]
    fn dacl_drift_is_fixed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path().join("a.pem"));
        apply(&t, b"x").unwrap();
        let other = Target {
            acl: vec![parse_entry("S-1-5-18:F").unwrap()],
            ..t.clone()
        };
        // Windows keeps the DACL: Metadata once, then Unchanged. Wine
        // ignores SetSecurityInfo on files (the read-back is derived from
        // the Unix mode), so the repair cannot be verified there and the
        // file stays Unchanged: either way, never a rewrite.
        let kept = security::read(&open_existing(&t.path, false).unwrap())
            .unwrap()
            .matches(&t.resolved(ObjectKind::File).unwrap());
        let first = apply(&other, b"x").unwrap();
        let second = apply(&other, b"x").unwrap();
        if kept {
            assert_eq!(plan(&t, b"x").unwrap(), Change::Metadata);
            assert_eq!((first, second), (Change::Metadata, Change::Unchanged));
        } else {
            assert_eq!((first, second), (Change::Unchanged, Change::Unchanged));
        }
    }

    #[test]
    fn staged_candidate_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path().join("a.pem"));
        let staged = stage(&t, b"x").unwrap().unwrap();
        let cand = staged.candidate_path().to_path_buf();
        assert!(cand.exists());
        drop(staged);
        assert!(!cand.exists());
        assert!(!t.path.exists());
    }

    #[test]
    fn replace_waits_for_a_reader_without_delete_sharing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("in-use.pem");
        let src = dir.path().join("new.tmp");
        std::fs::write(&dest, b"old").unwrap();
        std::fs::write(&src, b"new").unwrap();
        // A reader like IIS: read sharing only, no delete sharing.
        let mut holder = Some(
            OpenOptions::new()
                .read(true)
                .share_mode(FILE_SHARE_READ)
                .open(&dest)
                .unwrap(),
        );
        let mut retries = 0;
        replace_with_retry(&src, &dest, &REPLACE_RETRY, |n| {
            retries = n;
            // Release the file after the first refusal.
            holder.take();
        })
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        // Wine may or may not refuse the first move; Windows does.
        assert!(retries <= 1);
        let policy = RetryPolicy {
            attempts: 2,
            first_wait: Duration::from_millis(1),
            max_wait: Duration::from_millis(1),
        };
        // A missing source is not "in use": no retry.
        let mut called = false;
        assert!(replace_with_retry(&src, &dest, &policy, |_| called = true).is_err());
        assert!(!called);
    }
}
