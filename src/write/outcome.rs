//! What a write did, and how it failed: shared by the Unix writer
//! (`write/mod.rs`) and the Windows writer (`platform/windows/write.rs`),
//! which expose the same API.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    /// Same bytes; metadata fixed in place (mode/owner on Unix, the DACL on
    /// Windows).
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

pub(crate) fn werr(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError {
        path,
        action,
        source,
    }
}
