//! Staging and committing the files of a round: every candidate written and
//! fsynced next to its destination, spread over a few threads (concurrent
//! fsyncs share the filesystem's journal commits), and one directory fsync
//! per directory after the renames instead of one per file. Staging never
//! touches a destination; a failure leaves every live file as it was.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::Engine;
use crate::hooks::Hook;
use crate::secret::SecretBytes;
use crate::write::{self, Change, WriteError};

/// Threads that stage (write + fsync) the files of a round. Concurrent
/// fsyncs share the filesystem's journal commits; 8 gave most of the gain
/// for 500 files on ext4 (BENCHMARKS.md) without a thread per file.
pub const STAGE_THREADS: usize = 8;

/// A staged file: its index in the config, its destination, and the
/// candidate (`None` when unchanged).
pub(crate) type StagedFile = (usize, PathBuf, Option<write::Staged>);

/// What `rollback = true` files replaced this round: destination →
/// (backup, dir_mode).
pub(crate) type Backups = BTreeMap<PathBuf, (write::Backup, u32)>;

/// Stage file `index` with `bytes` for every job, spread over
/// [`STAGE_THREADS`] threads; one result per job, by file index.
pub(crate) fn stage_all(
    engine: &Engine,
    jobs: &[(usize, &SecretBytes)],
) -> HashMap<usize, Result<StagedFile, WriteError>> {
    let chunk = jobs.len().div_ceil(STAGE_THREADS).max(1);
    let stage_one = |(index, bytes): &(usize, &SecretBytes)| {
        let target = engine.target(*index);
        let staged = write::stage(&target, bytes.expose()).map(|s| (*index, target.path, s));
        (*index, staged)
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || part.iter().map(stage_one).collect::<Vec<_>>());
                (part, handle)
            })
            .collect();
        let mut out = HashMap::with_capacity(jobs.len());
        for (part, handle) in handles {
            match handle.join() {
                Ok(results) => out.extend(results),
                Err(_) => {
                    for (index, _) in part {
                        out.insert(
                            *index,
                            Err(WriteError {
                                path: engine.target(*index).path,
                                action: "stage (the writer thread panicked)",
                                source: std::io::Error::other("panic"),
                            }),
                        );
                    }
                }
            }
        }
        out
    })
}

/// `fsync` the directory of each path (one path per directory).
pub(crate) fn sync_dirs(paths: &[PathBuf]) -> Result<(), WriteError> {
    paths.iter().try_for_each(|p| write::sync_parent_dir(p))
}

/// Commit `candidate` of a `rollback = true` file, keeping what it replaced
/// in `backups` (restored with `dir_mode` if its hook fails).
pub(crate) fn commit_with_backup(
    candidate: write::Staged,
    dir_mode: u32,
    backups: &mut Backups,
) -> Result<Change, WriteError> {
    let (change, backup) = candidate.commit_with_backup()?;
    backups.insert(backup.path.clone(), (backup, dir_mode));
    Ok(change)
}

/// After hook `command` failed: put back the files of its group that have a
/// backup (`rollback = true`), logging each restore.
pub(crate) fn roll_back(command: &Hook, changed: &[PathBuf], backups: &mut Backups) {
    for path in changed {
        let Some((backup, dir_mode)) = backups.remove(path) else {
            continue;
        };
        match backup.restore(dir_mode) {
            Ok(_) => tracing::warn!(
                path = %path.display(),
                hook = %command,
                "on_change hook failed: previous file restored (rollback)"
            ),
            Err(e) => tracing::error!(
                path = %path.display(),
                hook = %command,
                error = %e,
                "on_change hook failed and the previous file could not be restored"
            ),
        }
    }
}
