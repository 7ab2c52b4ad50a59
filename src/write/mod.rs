//! The ONLY code that creates or replaces files (SPEC.md "Writing files").
//!
//! * Unchanged bytes and metadata → no write at all (inode and mtime kept).
//! * The destination's directory is opened once, walking from `/` by
//!   descriptor: a symlink anywhere on the path is refused (naming the
//!   component) unless the file sets `follow_symlinks = true`, and so is a
//!   directory that a user other than root, kvsync's user or the file's
//!   owner can write to. Every later step acts on that descriptor.
//! * Same bytes, different mode/owner → fixed in place (`fchmod`/`fchown` on
//!   the descriptor that was inspected; inode kept).
//! * Otherwise: missing parent directories are created (`dir_mode`, exactly,
//!   regardless of umask); a temp file is created in the destination
//!   directory with `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600; owner and
//!   mode are set on the open descriptor; the bytes are written; it is
//!   `fsync`ed, renamed over the destination, and the directory is
//!   `fsync`ed. Readers see the old file or the new one, never a torn, empty
//!   or world-readable one, and the secret never sits in a file owned by
//!   anyone but the final owner.
//! * A symlink, FIFO or hard link at the destination is replaced (rename
//!   replaces the entry itself), never followed; its target is untouched.
//! * When `uid`/`gid` are not configured, the file gets kvsync's own user
//!   and group. The one exception is a file kvsync itself wrote earlier in
//!   this process (same device and inode): its owner is kept, so an
//!   operator's `chown` survives rotations until a restart. A file someone
//!   else put at the destination never lends its owner to the secret.
//!
//! This module never logs or returns file contents.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::secret::SecretBytes;

mod outcome;
#[cfg(unix)]
mod unix;
use sys::{Dir, Existing, Meta, Temp};
#[cfg(unix)]
use unix as sys;

/// Permission bits compared and applied (`chmod` semantics: rwx for
/// user/group/other plus setuid, setgid, sticky).
const MODE_MASK: u32 = 0o7777;

#[derive(Clone, Debug)]
pub struct Target {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub dir_mode: u32,
    /// Follow symlinks in the directories of `path` and skip the check of
    /// who can write to them (`follow_symlinks = true`).
    pub follow_symlinks: bool,
}

use outcome::werr;
pub use outcome::{Change, WriteError};

/// Destination → (device, inode) of the file this process last wrote
/// there: the only files whose owner is kept when none is configured.
static WRITTEN: Mutex<Option<HashMap<PathBuf, (u64, u64)>>> = Mutex::new(None);

fn remember(path: &Path, meta: &Meta) {
    if let Ok(mut w) = WRITTEN.lock() {
        w.get_or_insert_with(HashMap::new)
            .insert(path.to_path_buf(), (meta.dev, meta.ino));
    }
}

fn wrote(path: &Path, meta: &Meta) -> bool {
    WRITTEN.lock().is_ok_and(|w| {
        w.as_ref()
            .and_then(|m| m.get(path))
            .is_some_and(|&id| id == (meta.dev, meta.ino))
    })
}

/// The owner and group the file must have: configured, else those of the
/// file kvsync wrote there before, else kvsync's own.
fn owner_for(target: &Target, previous: Option<&Meta>) -> (u32, u32) {
    let kept = previous
        .filter(|m| wrote(&target.path, m))
        .map(|m| (m.uid, m.gid));
    let (uid, gid) = kept.unwrap_or_else(sys::own_ids);
    (target.uid.unwrap_or(uid), target.gid.unwrap_or(gid))
}

fn file_name(path: &Path) -> Result<&OsStr, WriteError> {
    path.file_name().ok_or_else(|| {
        werr(path, "inspect the destination")(std::io::Error::other("the path has no file name"))
    })
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

/// What writing `bytes` to `target` would do, without doing it (creates no
/// directory; a symlinked or unsafe ancestor is still an error).
pub fn plan(target: &Target, bytes: &[u8]) -> Result<Change, WriteError> {
    let Some(dir) = Dir::open_parent(target, false)? else {
        return Ok(Change::Created);
    };
    decide(&dir, target, bytes).map(|d| d.change)
}

/// The decision about one destination, with what it was based on.
struct Decision {
    change: Change,
    /// The regular file there now (kept open for an in-place fix).
    current: Option<(File, Meta)>,
}

fn decide(dir: &Dir, target: &Target, bytes: &[u8]) -> Result<Decision, WriteError> {
    Ok(match dir.inspect(file_name(&target.path)?)? {
        Existing::Missing => Decision {
            change: Change::Created,
            current: None,
        },
        Existing::Replaceable => Decision {
            change: Change::Updated,
            current: None,
        },
        Existing::Regular { mut file, meta } => {
            let change = if !same_bytes(&mut file, meta.len, bytes, &target.path)? {
                Change::Updated
            } else if meta.mode == target.mode & MODE_MASK
                && (meta.uid, meta.gid) == owner_for(target, Some(&meta))
            {
                Change::Unchanged
            } else {
                Change::Metadata
            };
            Decision {
                change,
                current: Some((file, meta)),
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
    follow_symlinks: bool,
}

pub struct Previous {
    pub bytes: SecretBytes,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Backup {
    /// Put the previous contents/metadata back (atomically, like any write,
    /// through the same checked directory walk), or remove a file that did
    /// not exist before.
    pub fn restore(self, dir_mode: u32) -> Result<Change, WriteError> {
        let target = Target {
            path: self.path,
            mode: 0,
            uid: None,
            gid: None,
            dir_mode,
            follow_symlinks: self.follow_symlinks,
        };
        match self.previous {
            Some(p) => apply(
                &Target {
                    mode: p.mode,
                    uid: Some(p.uid),
                    gid: Some(p.gid),
                    ..target
                },
                p.bytes.expose(),
            ),
            None => {
                let Some(dir) = Dir::open_parent(&target, false)? else {
                    return Ok(Change::Unchanged);
                };
                dir.remove(file_name(&target.path)?)?;
                dir.sync()?;
                Ok(Change::Updated)
            }
        }
    }
}

enum Action {
    /// Rename the candidate over the destination.
    Replace(Temp),
    /// Fix mode/owner of the inspected destination in place.
    Fix { dir: Dir, file: File, meta: Meta },
}

/// A candidate file written and fsynced next to its destination, not yet
/// renamed over it. Dropping it removes the temp file.
pub struct Staged {
    target: Target,
    change: Change,
    owner: (u32, u32),
    action: Action,
}

impl Staged {
    /// Path of the candidate (for `verify` commands). For a metadata-only
    /// change, the destination itself (its bytes are already right).
    pub fn candidate_path(&self) -> &Path {
        match &self.action {
            Action::Replace(tmp) => tmp.path(),
            Action::Fix { .. } => &self.target.path,
        }
    }

    #[cfg(test)]
    pub fn change(&self) -> Change {
        self.change
    }

    /// Rename over the destination and fsync the directory (or fix the
    /// metadata in place).
    pub fn commit(self) -> Result<Change, WriteError> {
        let (change, dir) = self.commit_inner()?;
        if let Some(dir) = dir {
            dir.sync()?;
        }
        Ok(change)
    }

    /// [`Staged::commit`] without the directory `fsync`, for a batch of
    /// files in few directories: the caller must [`sync_parent_dir`] of
    /// every committed path before reporting the batch durable (one `fsync`
    /// per directory instead of one per file).
    pub fn commit_without_dir_sync(self) -> Result<Change, WriteError> {
        self.commit_inner().map(|(change, _)| change)
    }

    /// Commit; returns the directory when an entry was renamed in it.
    fn commit_inner(self) -> Result<(Change, Option<Dir>), WriteError> {
        let path = &self.target.path;
        let name = file_name(path)?;
        match self.action {
            Action::Fix { dir, file, meta } => {
                if !dir.still(name, &meta) {
                    return Err(werr(path, "fix the mode/owner in place")(
                        std::io::Error::other(
                            "the destination was replaced while the round ran; the next round writes it again",
                        ),
                    ));
                }
                sys::set_meta(&file, self.owner, self.target.mode, path)?;
                file.sync_all().map_err(werr(path, "fsync"))?;
                remember(path, &meta);
                Ok((self.change, None))
            }
            Action::Replace(tmp) => {
                let meta = sys::meta_of(&tmp.file, path)?;
                let dir = tmp.rename_to(name)?;
                remember(path, &meta);
                Ok((self.change, Some(dir)))
            }
        }
    }

    /// [`Staged::commit`], returning what was there before so the caller can
    /// roll back a round that failed later.
    pub fn commit_with_backup(self) -> Result<(Change, Backup), WriteError> {
        let path = self.target.path.clone();
        let previous = match Dir::open_parent(&self.target, false)? {
            Some(dir) => match dir.inspect(file_name(&path)?)? {
                Existing::Regular { mut file, meta } => {
                    let mut buf = Vec::new();
                    file.read_to_end(&mut buf)
                        .map_err(werr(&path, "read the destination"))?;
                    Some(Previous {
                        bytes: SecretBytes::new(buf),
                        mode: meta.mode,
                        uid: meta.uid,
                        gid: meta.gid,
                    })
                }
                _ => None,
            },
            None => None,
        };
        let follow_symlinks = self.target.follow_symlinks;
        let change = self.commit()?;
        Ok((
            change,
            Backup {
                path,
                previous,
                follow_symlinks,
            },
        ))
    }
}

/// `fsync` the directory holding `path` (after
/// [`Staged::commit_without_dir_sync`]).
pub fn sync_parent_dir(path: &Path) -> Result<(), WriteError> {
    sys::sync_dir_of(path)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Prepare a write; `Ok(None)` when nothing needs writing. A metadata-only
/// change is fixed in place by [`Staged::commit`].
pub fn stage(target: &Target, bytes: &[u8]) -> Result<Option<Staged>, WriteError> {
    let path = &target.path;
    let dir = match Dir::open_parent(target, true)? {
        Some(dir) => dir,
        None => {
            return Err(werr(parent_dir(path), "open the directory")(
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
    };
    let decision = decide(&dir, target, bytes)?;
    let owner = owner_for(target, decision.current.as_ref().map(|(_, m)| m));
    match (decision.change, decision.current) {
        (Change::Unchanged, _) => Ok(None),
        (Change::Metadata, Some((file, meta))) => Ok(Some(Staged {
            target: target.clone(),
            change: Change::Metadata,
            owner,
            action: Action::Fix { dir, file, meta },
        })),
        (change, _) => {
            let mut tmp = dir.create_temp(file_name(path)?)?;
            // Owner and mode first: the secret never sits in a file owned
            // by anyone but its final owner.
            sys::set_meta(&tmp.file, owner, target.mode, path)?;
            tmp.file
                .write_all(bytes)
                .map_err(werr(tmp.path(), "write the temp file"))?;
            tmp.file
                .sync_all()
                .map_err(werr(tmp.path(), "fsync the temp file"))?;
            Ok(Some(Staged {
                target: target.clone(),
                change,
                owner,
                action: Action::Replace(tmp),
            }))
        }
    }
}

/// `stage` then `commit`.
pub fn apply(target: &Target, bytes: &[u8]) -> Result<Change, WriteError> {
    match stage(target, bytes)? {
        Some(staged) => staged.commit(),
        None => Ok(Change::Unchanged),
    }
}

/// Remove temp files a killed run left next to `target` (regular files
/// named `.NAME.kvsync-*.tmp` owned by kvsync's user); returns how many.
/// A missing or unsafe directory sweeps nothing.
pub fn sweep_stale_temps(target: &Target) -> usize {
    match Dir::open_parent(target, false) {
        Ok(Some(dir)) => file_name(&target.path)
            .and_then(|n| dir.sweep_temps(n))
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
