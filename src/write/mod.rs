//! The ONLY code that creates or replaces files (SPEC.md "Writing files").
//!
//! * Unchanged bytes and metadata → no write at all (inode and mtime kept).
//! * Same bytes, different mode/owner → fixed in place (`fchmod`/`fchown` on
//!   a descriptor opened with `O_NOFOLLOW`; inode kept).
//! * Otherwise: missing parent directories are created (`dir_mode`, exactly,
//!   regardless of umask); a temp file is created in the destination
//!   directory with `O_CREAT|O_EXCL` and mode 0600; the bytes are written;
//!   owner and mode are set on the open descriptor; it is `fsync`ed, renamed
//!   over the destination, and the directory is `fsync`ed. Readers see the
//!   old file or the new one, never a torn, empty or world-readable one.
//! * A symlink at the destination is replaced (rename replaces the link
//!   itself), never followed; its target is untouched.
//! * When `uid`/`gid` are not configured, a replaced regular file keeps its
//!   previous owner and group (an operator's `chown` survives rotations); a
//!   new file gets the process's.
//!
//! This module never logs or returns file contents.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::secret::SecretBytes;

/// Permission bits compared and applied (`chmod` semantics: rwx for
/// user/group/other plus setuid, setgid, sticky).
const MODE_MASK: u32 = 0o7777;
/// Mode of the temp file at creation (SPEC.md "Writing files").
const TEMP_MODE: u32 = 0o600;

#[derive(Clone, Debug)]
pub struct Target {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub dir_mode: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    /// Same bytes; mode or owner fixed in place.
    Metadata,
    Unchanged,
}

impl Change {
    pub fn is_change(self) -> bool {
        self != Change::Unchanged
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {action}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: std::io::Error,
}

fn werr(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError {
        path,
        action,
        source,
    }
}

/// What is at the destination now, read without following a symlink.
enum Existing {
    Missing,
    /// A symlink or other non-regular, non-directory entry: replace it.
    Replaceable,
    Regular {
        file: File,
        meta: std::fs::Metadata,
    },
}

/// Open flags for inspecting a destination: never follow a symlink, never
/// block on a FIFO.
fn inspect_flags() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits()
}

fn existing(path: &Path) -> Result<Existing, WriteError> {
    let lmeta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(e) => return Err(werr(path, "inspect the destination")(e)),
    };
    if lmeta.is_dir() {
        return Err(werr(path, "inspect the destination")(
            std::io::Error::other("it is a directory; remove it or choose another path"),
        ));
    }
    if !lmeta.file_type().is_file() {
        return Ok(Existing::Replaceable);
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(inspect_flags())
        .open(path)
    {
        Ok(f) => f,
        // Swapped for a symlink between the two calls (ELOOP): replace it.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(Existing::Replaceable),
        Err(e) => return Err(werr(path, "open the destination")(e)),
    };
    let meta = file
        .metadata()
        .map_err(werr(path, "inspect the destination"))?;
    if !meta.is_file() {
        return Ok(Existing::Replaceable);
    }
    Ok(Existing::Regular { file, meta })
}

fn same_bytes(file: &mut File, len: u64, bytes: &[u8], path: &Path) -> Result<bool, WriteError> {
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    // One spare byte: read_to_end then never reallocates (which would leave
    // an unwiped copy) unless the file grew meanwhile.
    let mut current = zeroize::Zeroizing::new(Vec::with_capacity(bytes.len() + 1));
    file.read_to_end(&mut current)
        .map_err(werr(path, "read the destination"))?;
    Ok(current.as_slice() == bytes)
}

fn metadata_matches(target: &Target, meta: &std::fs::Metadata) -> bool {
    meta.mode() & MODE_MASK == target.mode & MODE_MASK
        && target.uid.is_none_or(|u| u == meta.uid())
        && target.gid.is_none_or(|g| g == meta.gid())
}

/// What writing `bytes` to `target` would do, without doing it.
pub fn plan(target: &Target, bytes: &[u8]) -> Result<Change, WriteError> {
    decide(target, bytes).map(|(change, _)| change)
}

/// The change writing `bytes` to `target` makes, and the owner of the
/// regular file it replaces (kept unless `target` sets one).
fn decide(target: &Target, bytes: &[u8]) -> Result<(Change, Option<(u32, u32)>), WriteError> {
    Ok(match existing(&target.path)? {
        Existing::Missing => (Change::Created, None),
        Existing::Replaceable => (Change::Updated, None),
        Existing::Regular { mut file, meta } => {
            let change = if !same_bytes(&mut file, meta.len(), bytes, &target.path)? {
                Change::Updated
            } else if metadata_matches(target, &meta) {
                Change::Unchanged
            } else {
                Change::Metadata
            };
            (change, Some((meta.uid(), meta.gid())))
        }
    })
}

/// The state of a destination before a commit, for rolling it back.
pub struct Backup {
    pub path: PathBuf,
    /// `None` when the destination did not exist (or was not a regular
    /// file): rolling back removes the new file.
    pub previous: Option<Previous>,
}

pub struct Previous {
    pub bytes: SecretBytes,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Backup {
    /// Put the previous contents/metadata back (atomically, like any write),
    /// or remove a file that did not exist before.
    pub fn restore(self, dir_mode: u32) -> Result<Change, WriteError> {
        match self.previous {
            Some(p) => apply(
                &Target {
                    path: self.path,
                    mode: p.mode,
                    uid: Some(p.uid),
                    gid: Some(p.gid),
                    dir_mode,
                },
                p.bytes.expose(),
            ),
            None => {
                std::fs::remove_file(&self.path).map_err(werr(&self.path, "remove"))?;
                fsync_parent(&self.path)?;
                Ok(Change::Updated)
            }
        }
    }
}

enum Action {
    /// Rename the candidate over the destination.
    Replace(tempfile::NamedTempFile),
    /// Fix mode/owner of the destination in place.
    Fix,
}

/// A candidate file written and fsynced next to its destination, not yet
/// renamed over it. Dropping it removes the temp file.
pub struct Staged {
    target: Target,
    change: Change,
    action: Action,
}

impl Staged {
    /// Path of the candidate (for `verify` commands). For a metadata-only
    /// change, the destination itself (its bytes are already right).
    pub fn candidate_path(&self) -> &Path {
        match &self.action {
            Action::Replace(tmp) => tmp.path(),
            Action::Fix => &self.target.path,
        }
    }

    #[cfg(test)]
    pub fn change(&self) -> Change {
        self.change
    }

    /// Rename over the destination and fsync the directory (or fix the
    /// metadata in place).
    pub fn commit(self) -> Result<Change, WriteError> {
        let path = self.target.path.clone();
        let renamed = matches!(self.action, Action::Replace(_));
        let change = self.commit_without_dir_sync()?;
        if renamed {
            fsync_parent(&path)?;
        }
        Ok(change)
    }

    /// [`Staged::commit`] without the directory `fsync`, for a batch of
    /// files in few directories: the caller must [`sync_parent_dir`] of
    /// every committed path before reporting the batch durable (one `fsync`
    /// per directory instead of one per file).
    pub fn commit_without_dir_sync(self) -> Result<Change, WriteError> {
        let path = &self.target.path;
        match self.action {
            Action::Fix => {
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(inspect_flags())
                    .open(path)
                    .map_err(werr(path, "open the destination to fix its mode/owner"))?;
                set_meta(&file, &self.target, None, path)?;
                file.sync_all().map_err(werr(path, "fsync"))?;
            }
            Action::Replace(tmp) => {
                tmp.persist(path)
                    .map_err(|e| werr(path, "rename the new file over the destination")(e.error))?;
            }
        }
        Ok(self.change)
    }

    /// [`Staged::commit`], returning what was there before so the caller can
    /// roll back a round that failed later.
    pub fn commit_with_backup(self) -> Result<(Change, Backup), WriteError> {
        let path = self.target.path.clone();
        let previous = match existing(&path)? {
            Existing::Regular { mut file, meta } => {
                let mut buf = Vec::new();
                file.read_to_end(&mut buf)
                    .map_err(werr(&path, "read the destination"))?;
                Some(Previous {
                    bytes: SecretBytes::new(buf),
                    mode: meta.mode() & MODE_MASK,
                    uid: meta.uid(),
                    gid: meta.gid(),
                })
            }
            _ => None,
        };
        let change = self.commit()?;
        Ok((change, Backup { path, previous }))
    }
}

/// `fchown` (when asked, else to `keep` when given) then `fchmod` on an open
/// descriptor. chown first: it may clear setuid/setgid bits.
fn set_meta(
    file: &File,
    target: &Target,
    keep: Option<(u32, u32)>,
    path: &Path,
) -> Result<(), WriteError> {
    let uid = target.uid.or(keep.map(|k| k.0));
    let gid = target.gid.or(keep.map(|k| k.1));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(file, uid, gid).map_err(werr(path, "set the owner"))?;
    }
    file.set_permissions(Permissions::from_mode(target.mode & MODE_MASK))
        .map_err(werr(path, "set the mode"))
}

/// `fsync` the directory holding `path` (after
/// [`Staged::commit_without_dir_sync`]).
pub fn sync_parent_dir(path: &Path) -> Result<(), WriteError> {
    fsync_parent(path)
}

fn fsync_parent(path: &Path) -> Result<(), WriteError> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir, "fsync the directory"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create missing ancestors of `path`, each with exactly `mode`.
fn create_parents(path: &Path, mode: u32) -> Result<(), WriteError> {
    let dir = parent_dir(path);
    let mut missing = Vec::new();
    for a in dir.ancestors() {
        if a.as_os_str().is_empty() || a.exists() {
            break;
        }
        missing.push(a);
    }
    for d in missing.into_iter().rev() {
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, mode & MODE_MASK);
        match b.create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(werr(d, "create the directory")(e)),
        }
        // DirBuilder's mode is filtered by the umask; set it exactly.
        std::fs::set_permissions(d, Permissions::from_mode(mode & MODE_MASK))
            .map_err(werr(d, "set the directory mode"))?;
    }
    Ok(())
}

/// Create the candidate: `O_CREAT|O_EXCL`, mode 0600, in `dir`.
fn create_candidate(dir: &Path, dest: &Path) -> Result<tempfile::NamedTempFile, WriteError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}.kvsync-"))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(TEMP_MODE))
        .tempfile_in(dir)
        .map_err(werr(dest, "create a temp file next to the destination"))
}

/// Prepare a write; `Ok(None)` when nothing needs writing. A metadata-only
/// change is fixed in place by [`Staged::commit`].
pub fn stage(target: &Target, bytes: &[u8]) -> Result<Option<Staged>, WriteError> {
    let path = &target.path;
    let (change, keep) = decide(target, bytes)?;
    match change {
        Change::Unchanged => return Ok(None),
        Change::Metadata => {
            return Ok(Some(Staged {
                target: target.clone(),
                change,
                action: Action::Fix,
            }));
        }
        Change::Created | Change::Updated => {}
    }
    create_parents(path, target.dir_mode)?;
    let mut tmp = create_candidate(parent_dir(path), path)?;
    tmp.write_all(bytes)
        .map_err(werr(tmp.path(), "write the temp file"))?;
    set_meta(tmp.as_file(), target, keep, path)?;
    tmp.as_file()
        .sync_all()
        .map_err(werr(tmp.path(), "fsync the temp file"))?;
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
mod tests;
