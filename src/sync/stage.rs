//! Staging the files of a one-shot round: every candidate written and
//! fsynced next to its destination, spread over a few threads (concurrent
//! fsyncs share the filesystem's journal commits), and one directory fsync
//! per directory after the renames instead of one per file. Staging never
//! touches a destination; a failure leaves every live file as it was.

use std::path::PathBuf;

use super::{Engine, StagedFile, SyncError};
use crate::secret::SecretBytes;
use crate::write::{self, WriteError};

/// Threads that stage (write + fsync) the files of a one-shot round.
/// Concurrent fsyncs share the filesystem's journal commits; 8 gave most of
/// the gain for 500 files on ext4 (BENCHMARKS.md) without a thread per file.
pub const STAGE_THREADS: usize = 8;

impl Engine {
    /// Stage every changed file (temp files next to their destinations),
    /// in order, spread over [`STAGE_THREADS`] threads (each stage is an
    /// `fsync`; concurrent ones share journal commits): a failure while
    /// staging leaves every destination untouched.
    pub(super) fn stage_all(&self, rendered: &[SecretBytes]) -> Result<Vec<StagedFile>, SyncError> {
        let chunk = rendered.len().div_ceil(STAGE_THREADS).max(1);
        let stage_chunk = |start: usize, part: &[SecretBytes]| {
            part.iter()
                .enumerate()
                .map(|(i, bytes)| {
                    let target = self.target(start + i);
                    write::stage(&target, bytes.expose()).map(|s| (start + i, target.path, s))
                })
                .collect::<Result<Vec<_>, WriteError>>()
        };
        let parts: Vec<Result<Vec<StagedFile>, WriteError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = rendered
                .chunks(chunk)
                .enumerate()
                .map(|(n, part)| (n * chunk, scope.spawn(move || stage_chunk(n * chunk, part))))
                .collect();
            handles
                .into_iter()
                .map(|(start, h)| {
                    h.join().unwrap_or_else(|_| {
                        Err(WriteError {
                            path: self.target(start).path,
                            action: "stage (the writer thread panicked)",
                            source: std::io::Error::other("panic"),
                        })
                    })
                })
                .collect()
        });
        let mut staged = Vec::with_capacity(rendered.len());
        for part in parts {
            staged.extend(part?);
        }
        Ok(staged)
    }
}

/// `fsync` the directory of each path (one path per directory).
pub(super) fn sync_dirs(paths: &[PathBuf]) -> Result<(), WriteError> {
    paths.iter().try_for_each(|p| write::sync_parent_dir(p))
}
