//! The ONLY code that creates or replaces files (SPEC.md "Writing files").
//! Unchanged bytes → no write (inode and mtime kept); changed → temp file in
//! the destination directory created 0600, write, fsync, fchmod/fchown on the
//! open file, rename, fsync the directory. A symlink at the destination is
//! replaced, never followed. Missing parents are created.

use std::path::{Path, PathBuf};

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
#[error("{path}: {action}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// What writing `bytes` to `target` would do, without doing it.
pub fn plan(target: &Target, bytes: &[u8]) -> Result<Change, WriteError> {
    let _ = (target, bytes);
    unimplemented!("write::plan")
}

/// A candidate file written and fsynced next to its destination, not yet
/// renamed over it. Dropping it removes the temp file.
pub struct Staged {
    _private: (),
}

impl Staged {
    /// Path of the candidate (for `verify` commands).
    pub fn candidate_path(&self) -> &Path {
        unimplemented!("Staged::candidate_path")
    }

    pub fn change(&self) -> Change {
        unimplemented!("Staged::change")
    }

    /// Rename over the destination and fsync the directory.
    pub fn commit(self) -> Result<Change, WriteError> {
        unimplemented!("Staged::commit")
    }
}

/// Prepare a write; `Ok(None)` when nothing needs writing. A metadata-only
/// change is fixed in place by [`Staged::commit`].
pub fn stage(target: &Target, bytes: &[u8]) -> Result<Option<Staged>, WriteError> {
    let _ = (target, bytes);
    unimplemented!("write::stage")
}

/// `stage` then `commit`.
pub fn apply(target: &Target, bytes: &[u8]) -> Result<Change, WriteError> {
    match stage(target, bytes)? {
        Some(staged) => staged.commit(),
        None => Ok(Change::Unchanged),
    }
}
