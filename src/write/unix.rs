//! Unix primitives of [`super`]: every name is resolved relative to a
//! directory descriptor, never as a whole path, so nothing on the way can be
//! swapped for a symlink between a check and a use.
//!
//! * The destination's directory is walked from `/` one component at a
//!   time (`openat2(RESOLVE_NO_SYMLINKS)` where the kernel has it, else
//!   `openat(O_DIRECTORY|O_NOFOLLOW)`); a symlink anywhere is refused with
//!   the component named, unless the file sets `follow_symlinks = true`.
//! * Each directory on the way must be owned by root, by kvsync's own user
//!   or by the file's configured owner, and writable by nobody else (a
//!   root-owned directory with the sticky bit, like `/tmp`, is fine): whoever
//!   can write to it could redirect the write (sshd's StrictModes rule).
//! * Missing directories are created with `mkdirat` and given their mode
//!   with `fchmod` on the descriptor just opened; the temp file is created
//!   with `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`, renamed with `renameat`, and a
//!   metadata-only fix acts on the descriptor that was inspected.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::{MODE_MASK, Target, WriteError, werr};

/// Mode of the temp file at creation (SPEC.md "Writing files").
const TEMP_MODE: u32 = 0o600;
/// Attempts at a fresh temp name before giving up (each collision means
/// another file of that exact random name exists).
const TEMP_ATTEMPTS: usize = 16;

/// What the checks and the owner logic need to know about an inode.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    pub len: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
}

impl Meta {
    fn of(st: &FileStat) -> Self {
        Self {
            len: u64::try_from(st.st_size).unwrap_or(0),
            mode: st.st_mode & MODE_MASK,
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    fn is(st: &FileStat, kind: SFlag) -> bool {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == kind
    }
}

/// kvsync's own user and group (the owner of a file when none is configured).
pub(super) fn own_ids() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// An open directory and the path it was reached by (for messages).
pub(super) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What is at the destination now, read without following a symlink.
pub(super) enum Existing {
    Missing,
    /// A symlink, FIFO, socket, device or a hard-linked file: replaced by
    /// the rename, never opened for a fix in place.
    Replaceable,
    Regular {
        file: File,
        meta: Meta,
    },
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

/// Whether `openat2` is worth trying (cleared on the first `ENOSYS`).
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// Open directory `name` below `parent`; without `follow`, a symlink fails
/// with `ELOOP` (or `ENOTDIR`).
fn open_component(parent: &OwnedFd, name: &OsStr, follow: bool) -> nix::Result<OwnedFd> {
    if follow {
        return nix::fcntl::openat(parent, name, dir_flags(), Mode::empty());
    }
    #[cfg(target_os = "linux")]
    if OPENAT2.load(Ordering::Relaxed) {
        use nix::fcntl::{OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(dir_flags() | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH);
        match nix::fcntl::openat2(parent, name, how) {
            // ENOSYS: kernel < 5.6; EPERM: a seccomp filter that predates
            // openat2 (systemd's SystemCallErrorNumber=EPERM).
            Err(Errno::ENOSYS | Errno::EPERM) => OPENAT2.store(false, Ordering::Relaxed),
            other => return other,
        }
    }
    nix::fcntl::openat(parent, name, dir_flags() | OFlag::O_NOFOLLOW, Mode::empty())
}

fn refused(path: &Path, message: String) -> WriteError {
    WriteError {
        path: path.to_path_buf(),
        action: "refused an unsafe directory on the destination path",
        source: std::io::Error::other(message),
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// The ancestor rule: owned by root, kvsync's user or the file's owner, and
/// writable by nobody else (sticky root-owned directories excepted).
fn check_ancestor(fd: &OwnedFd, path: &Path, target: &Target) -> Result<(), WriteError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| werr(path, "inspect the directory")(io(e)))?;
    let (euid, egid) = own_ids();
    let d = path.display();
    if st.st_uid != 0 && st.st_uid != euid && Some(st.st_uid) != target.uid {
        return Err(refused(
            path,
            format!(
                "it is owned by {}, who is neither root nor the file's owner and could swap it for a symlink; fix: `chown root {d}` (or set owner to that user if it owns the file)",
                user_name(st.st_uid)
            ),
        ));
    }
    let mode = st.st_mode & MODE_MASK;
    let sticky_root = mode & 0o1000 != 0 && st.st_uid == 0;
    if mode & 0o002 != 0 && !sticky_root {
        return Err(refused(
            path,
            format!(
                "it is writable by every user (mode {mode:04o}), who could swap what is in it; fix: `chmod o-w {d}` (a shared directory needs the sticky bit and root ownership: `chmod +t {d}`)"
            ),
        ));
    }
    let trusted_group = st.st_gid == 0 || (euid != 0 && st.st_gid == egid);
    if mode & 0o020 != 0 && !trusted_group && !sticky_root {
        return Err(refused(
            path,
            format!(
                "it is writable by group {} (mode {mode:04o}), whose members could swap what is in it; fix: `chmod g-w {d}`",
                st.st_gid
            ),
        ));
    }
    Ok(())
}

/// Explain why `name` below `parent` could not be opened as a directory.
fn not_a_directory(parent: &OwnedFd, name: &OsStr, path: &Path) -> WriteError {
    let is_link = nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| Meta::is(&st, SFlag::S_IFLNK));
    if is_link {
        let to = std::fs::read_link(path)
            .map(|t| format!(" (to {})", t.display()))
            .unwrap_or_default();
        refused(
            path,
            format!(
                "it is a symbolic link{to}; kvsync follows no symlink in a destination path: replace it by the real directory, or set follow_symlinks = true on this [[file]] if every owner of the path is trusted"
            ),
        )
    } else {
        werr(path, "open the directory")(std::io::Error::other("it is not a directory"))
    }
}

impl Dir {
    /// The directory of `target.path`, walked from `/` (or the working
    /// directory for a relative path) without following symlinks and
    /// checking every directory on the way. Missing directories are
    /// created with `target.dir_mode` when `create`, else `Ok(None)`.
    pub(super) fn open_parent(target: &Target, create: bool) -> Result<Option<Dir>, WriteError> {
        let parent = super::parent_dir(&target.path);
        let follow = target.follow_symlinks;
        let start = if parent.is_absolute() { "/" } else { "." };
        let mut path = PathBuf::from(start);
        let mut fd = nix::fcntl::open(start, dir_flags(), Mode::empty())
            .map_err(|e| werr(&path, "open the directory")(io(e)))?;
        if !follow {
            check_ancestor(&fd, &path, target)?;
        }
        for component in parent.components() {
            let name = match component {
                Component::Normal(name) => name,
                Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
                Component::ParentDir => {
                    return Err(refused(
                        &target.path,
                        "it contains `..`; write the path without it".to_owned(),
                    ));
                }
            };
            path.push(name);
            let mut created = false;
            let next = match open_component(&fd, name, follow) {
                Ok(next) => next,
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(&fd, name, Mode::from_bits_truncate(0o700)) {
                        Ok(()) => created = true,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(werr(&path, "create the directory")(io(e))),
                    }
                    open_component(&fd, name, follow)
                        .map_err(|e| open_error(&fd, name, &path, e))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(open_error(&fd, name, &path, e)),
            };
            if created {
                // mkdirat's mode is filtered by the umask; set it exactly on
                // the descriptor (never on a path a symlink could replace).
                nix::sys::stat::fchmod(
                    &next,
                    Mode::from_bits_truncate(target.dir_mode & MODE_MASK),
                )
                .map_err(|e| werr(&path, "set the directory mode")(io(e)))?;
            }
            if !follow {
                check_ancestor(&next, &path, target)?;
            }
            fd = next;
        }
        Ok(Some(Dir { fd, path }))
    }

    fn try_clone(&self) -> Result<Dir, WriteError> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(werr(&self.path, "duplicate the directory descriptor"))?,
            path: self.path.clone(),
        })
    }

    /// What entry `name` is, without following a symlink or blocking on a
    /// FIFO.
    pub(super) fn inspect(&self, name: &OsStr) -> Result<Existing, WriteError> {
        let path = self.path.join(name);
        let st = match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(Existing::Missing),
            Err(e) => return Err(werr(&path, "inspect the destination")(io(e))),
        };
        if Meta::is(&st, SFlag::S_IFDIR) {
            return Err(werr(&path, "inspect the destination")(
                std::io::Error::other("it is a directory; remove it or choose another path"),
            ));
        }
        if !Meta::is(&st, SFlag::S_IFREG) {
            return Ok(Existing::Replaceable);
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Swapped for a symlink between the two calls: replace it.
            Err(Errno::ELOOP) => return Ok(Existing::Replaceable),
            Err(Errno::ENOENT) => return Ok(Existing::Missing),
            Err(e) => return Err(werr(&path, "open the destination")(io(e))),
        };
        let st = nix::sys::stat::fstat(&fd)
            .map_err(|e| werr(&path, "inspect the destination")(io(e)))?;
        // A hard link shares its inode with a file elsewhere: never fix it
        // in place, replace the entry.
        if !Meta::is(&st, SFlag::S_IFREG) || st.st_nlink > 1 {
            return Ok(Existing::Replaceable);
        }
        Ok(Existing::Regular {
            file: File::from(fd),
            meta: Meta::of(&st),
        })
    }

    /// Whether `name` is still the inode `meta` describes.
    pub(super) fn still(&self, name: &OsStr, meta: &Meta) -> bool {
        nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_dev == meta.dev && st.st_ino == meta.ino)
    }

    /// A new `.NAME.kvsync-XXXXXX.tmp` next to `name`: `O_CREAT|O_EXCL|
    /// O_NOFOLLOW`, mode 0600.
    pub(super) fn create_temp(&self, name: &OsStr) -> Result<Temp, WriteError> {
        use rand::Rng;
        let dest = self.path.join(name);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut last = Errno::EEXIST;
        for _ in 0..TEMP_ATTEMPTS {
            let random: String = rand::rng()
                .sample_iter(&rand::distr::Alphanumeric)
                .take(6)
                .map(char::from)
                .collect();
            let mut temp_name = OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".kvsync-{random}.tmp"));
            match nix::fcntl::openat(
                &self.fd,
                temp_name.as_os_str(),
                flags,
                Mode::from_bits_truncate(TEMP_MODE),
            ) {
                Ok(fd) => {
                    let file = File::from(fd);
                    // The umask may have cleared bits of 0600 (never added
                    // any): set it exactly.
                    nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(TEMP_MODE))
                        .map_err(|e| werr(&dest, "set the temp file's mode")(io(e)))?;
                    return Ok(Temp {
                        path: self.path.join(&temp_name),
                        dir: self.try_clone()?,
                        name: temp_name,
                        file,
                        live: true,
                    });
                }
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(werr(&dest, "create a temp file next to the destination")(
            io(last),
        ))
    }

    /// Remove entry `name` (rollback of a file that did not exist).
    pub(super) fn remove(&self, name: &OsStr) -> Result<(), WriteError> {
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| werr(&self.path.join(name), "remove")(io(e)))
    }

    pub(super) fn sync(&self) -> Result<(), WriteError> {
        nix::unistd::fsync(&self.fd).map_err(|e| werr(&self.path, "fsync the directory")(io(e)))
    }

    /// Remove `.NAME.kvsync-*.tmp` files left by a killed run: regular
    /// files owned by kvsync's user only. Returns how many were removed.
    pub(super) fn sweep_temps(&self, name: &OsStr) -> Result<usize, WriteError> {
        let mut prefix = b".".to_vec();
        prefix.extend_from_slice(name.as_bytes());
        prefix.extend_from_slice(b".kvsync-");
        let fd = self.try_clone()?.fd;
        let mut dir = nix::dir::Dir::from_fd(fd)
            .map_err(|e| werr(&self.path, "list the directory")(io(e)))?;
        let stale: Vec<OsString> = dir
            .iter()
            .filter_map(Result::ok)
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n.as_bytes().starts_with(&prefix) && n.as_bytes().ends_with(b".tmp"))
            .collect();
        let (euid, _) = own_ids();
        let mut removed = 0;
        for n in stale {
            let ours =
                nix::sys::stat::fstatat(&self.fd, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| Meta::is(&st, SFlag::S_IFREG) && st.st_uid == euid);
            if ours && self.remove(&n).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// `fchown` (when `owner` differs from the file's) then `fchmod`. chown
/// first: it may clear setuid/setgid bits.
pub(super) fn set_meta(
    file: &File,
    owner: (u32, u32),
    mode: u32,
    path: &Path,
) -> Result<(), WriteError> {
    let st = nix::sys::stat::fstat(file.as_fd()).map_err(|e| werr(path, "inspect")(io(e)))?;
    if (st.st_uid, st.st_gid) != owner {
        nix::unistd::fchown(file, Some(owner.0.into()), Some(owner.1.into()))
            .map_err(|e| werr(path, "set the owner")(io(e)))?;
    }
    nix::sys::stat::fchmod(file, Mode::from_bits_truncate(mode & MODE_MASK))
        .map_err(|e| werr(path, "set the mode")(io(e)))
}

pub(super) fn meta_of(file: &File, path: &Path) -> Result<Meta, WriteError> {
    nix::sys::stat::fstat(file.as_fd())
        .map(|st| Meta::of(&st))
        .map_err(|e| werr(path, "inspect")(io(e)))
}

/// A temp file in an open directory; removed on drop unless renamed.
pub(super) struct Temp {
    dir: Dir,
    name: OsString,
    path: PathBuf,
    pub file: File,
    live: bool,
}

impl Temp {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `renameat` over `dest` in the same directory; returns the directory
    /// (to fsync it).
    pub(super) fn rename_to(mut self, dest: &OsStr) -> Result<Dir, WriteError> {
        nix::fcntl::renameat(&self.dir.fd, self.name.as_os_str(), &self.dir.fd, dest).map_err(
            |e| {
                werr(
                    &self.dir.path.join(dest),
                    "rename the new file over the destination",
                )(io(e))
            },
        )?;
        self.live = false;
        self.dir.try_clone()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.live {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// Open the directory holding `path` (for an `fsync`, which cannot be
/// redirected to harm anything).
pub(super) fn sync_dir_of(path: &Path) -> Result<(), WriteError> {
    let dir = super::parent_dir(path);
    let fd = nix::fcntl::open(dir, dir_flags(), Mode::empty())
        .map_err(|e| werr(dir, "open the directory")(io(e)))?;
    nix::unistd::fsync(&fd).map_err(|e| werr(dir, "fsync the directory")(io(e)))
}

fn open_error(parent: &OwnedFd, name: &OsStr, path: &Path, e: Errno) -> WriteError {
    match e {
        Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV => not_a_directory(parent, name, path),
        e => werr(path, "open the directory")(io(e)),
    }
}
