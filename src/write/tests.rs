#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use super::*;
use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn target(path: &Path, mode: u32) -> Target {
    Target {
        path: path.to_path_buf(),
        mode,
        uid: None,
        gid: None,
        dir_mode: 0o755,
        follow_symlinks: false,
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Names in `dir` that look like our temp files.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".kvsync-"))
        .collect()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn creates_with_exact_mode_regardless_of_umask() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    // 0640 would survive umask 022 anyway; 0666 would not.
    let t = target(&p, 0o666);
    assert_eq!(plan(&t, b"x").unwrap(), Change::Created);
    assert_eq!(apply(&t, b"x").unwrap(), Change::Created);
    assert_eq!(mode_of(&p), 0o666);
    assert_eq!(std::fs::read(&p).unwrap(), b"x");
    let t = target(&p, 0o640);
    assert_eq!(apply(&t, b"x").unwrap(), Change::Metadata);
    assert_eq!(mode_of(&p), 0o640);
    assert!(temp_files(d.path()).is_empty());
}

#[test]
fn unchanged_file_is_not_rewritten() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let t = target(&p, 0o600);
    apply(&t, b"same").unwrap();
    let before = std::fs::metadata(&p).unwrap();
    // Make a rewrite detectable even within the same mtime tick.
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let before_mtime = std::fs::metadata(&p).unwrap().mtime();
    assert_eq!(plan(&t, b"same").unwrap(), Change::Unchanged);
    assert!(stage(&t, b"same").unwrap().is_none());
    assert_eq!(apply(&t, b"same").unwrap(), Change::Unchanged);
    let after = std::fs::metadata(&p).unwrap();
    assert_eq!(before.ino(), after.ino());
    assert_eq!(before_mtime, after.mtime());
}

#[test]
fn changed_file_is_replaced_with_a_new_inode() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let t = target(&p, 0o600);
    apply(&t, b"old").unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    // Keep a reader open on the old file: it must keep seeing old bytes.
    let old_reader = std::fs::read(&p).unwrap();
    assert_eq!(plan(&t, b"new!").unwrap(), Change::Updated);
    let staged = stage(&t, b"new!").unwrap().unwrap();
    assert_eq!(staged.change(), Change::Updated);
    // Before commit the destination still holds the old bytes.
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(std::fs::read(staged.candidate_path()).unwrap(), b"new!");
    assert_eq!(staged.commit().unwrap(), Change::Updated);
    assert_eq!(std::fs::read(&p).unwrap(), b"new!");
    assert_ne!(std::fs::metadata(&p).unwrap().ino(), ino);
    assert_eq!(old_reader, b"old");
    assert!(temp_files(d.path()).is_empty());
}

#[test]
fn candidate_is_created_0600_and_never_more_open_than_target() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("secret");
    let dir = Dir::open_parent(&target(&dest, 0o600), false)
        .unwrap()
        .unwrap();
    let tmp = dir.create_temp(OsStr::new("secret")).unwrap();
    assert_eq!(mode_of(tmp.path()), 0o600);
    let name = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(".secret.kvsync-"), "{name}");
    drop(tmp);
    let staged = stage(&target(&dest, 0o640), b"x").unwrap().unwrap();
    assert_eq!(mode_of(staged.candidate_path()), 0o640);
}

#[test]
fn dropped_staged_leaves_no_temp_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let staged = stage(&target(&p, 0o600), b"x").unwrap().unwrap();
    let cand = staged.candidate_path().to_path_buf();
    assert!(cand.exists());
    drop(staged);
    assert!(!cand.exists());
    assert!(!p.exists());
    assert!(temp_files(d.path()).is_empty());
}

#[test]
fn metadata_only_fix_keeps_inode_and_bytes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    apply(&target(&p, 0o644), b"data").unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    let t = target(&p, 0o600);
    assert_eq!(plan(&t, b"data").unwrap(), Change::Metadata);
    let staged = stage(&t, b"data").unwrap().unwrap();
    assert_eq!(staged.candidate_path(), p.as_path());
    assert_eq!(staged.commit().unwrap(), Change::Metadata);
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.ino(), ino);
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(&p).unwrap(), b"data");
}

#[test]
fn owner_is_applied_when_root() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let mut t = target(&p, 0o640);
    t.uid = Some(65534);
    t.gid = Some(65534);
    assert_eq!(apply(&t, b"x").unwrap(), Change::Created);
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o640));
    // Owner drift is fixed in place.
    std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
    assert_eq!(plan(&t, b"x").unwrap(), Change::Metadata);
    assert_eq!(apply(&t, b"x").unwrap(), Change::Metadata);
    let m2 = std::fs::metadata(&p).unwrap();
    assert_eq!((m2.uid(), m2.gid(), m2.ino()), (65534, 65534, m.ino()));
    // Unconfigured owner: a replacement keeps the previous owner.
    let t2 = target(&p, 0o640);
    assert_eq!(apply(&t2, b"y").unwrap(), Change::Updated);
    let m3 = std::fs::metadata(&p).unwrap();
    assert_eq!((m3.uid(), m3.gid()), (65534, 65534));
    assert_ne!(m3.ino(), m.ino());
}

#[test]
fn symlink_at_destination_is_replaced_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, Permissions::from_mode(0o644)).unwrap();
    let p = d.path().join("link");
    std::os::unix::fs::symlink(&victim, &p).unwrap();
    let t = target(&p, 0o600);
    // Even with identical bytes, a symlink must be replaced.
    assert_eq!(plan(&t, b"precious").unwrap(), Change::Updated);
    assert_eq!(apply(&t, b"new").unwrap(), Change::Updated);
    let m = std::fs::symlink_metadata(&p).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(mode_of(&victim), 0o644);
}

#[test]
fn dangling_symlink_is_replaced_and_target_not_created() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("nowhere");
    let p = d.path().join("link");
    std::os::unix::fs::symlink(&victim, &p).unwrap();
    assert_eq!(apply(&target(&p, 0o600), b"x").unwrap(), Change::Updated);
    assert!(!victim.exists());
    assert_eq!(std::fs::read(&p).unwrap(), b"x");
}

#[test]
fn missing_parents_are_created_with_dir_mode() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a/b/c/f");
    let top = mode_of(d.path());
    let mut t = target(&p, 0o600);
    t.dir_mode = 0o750;
    assert_eq!(apply(&t, b"x").unwrap(), Change::Created);
    for sub in ["a", "a/b", "a/b/c"] {
        assert_eq!(mode_of(&d.path().join(sub)), 0o750, "{sub}");
    }
    // An existing parent's mode is left alone.
    assert_eq!(mode_of(d.path()), top);
}

#[test]
fn directory_at_destination_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let err = apply(&target(d.path(), 0o600), b"x").unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn backup_restores_previous_state() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    apply(&target(&p, 0o644), b"v1").unwrap();
    let staged = stage(&target(&p, 0o600), b"v2").unwrap().unwrap();
    let (change, backup) = staged.commit_with_backup().unwrap();
    assert_eq!(change, Change::Updated);
    assert_eq!(std::fs::read(&p).unwrap(), b"v2");
    backup.restore(0o755).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"v1");
    assert_eq!(mode_of(&p), 0o644);

    let q = d.path().join("new");
    let (_, backup) = stage(&target(&q, 0o600), b"x")
        .unwrap()
        .unwrap()
        .commit_with_backup()
        .unwrap();
    assert!(q.exists());
    backup.restore(0o755).unwrap();
    assert!(!q.exists());
}

#[test]
fn symlinked_ancestor_is_refused_naming_the_component() {
    let d = tempfile::tempdir().unwrap();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::create_dir(d.path().join("app")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, d.path().join("app/conf")).unwrap();
    let p = d.path().join("app/conf/sub/f");
    for result in [
        plan(&target(&p, 0o600), b"x"),
        apply(&target(&p, 0o600), b"x"),
    ] {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("app/conf: "), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert!(err.contains("follow_symlinks"), "{err}");
    }
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn follow_symlinks_writes_through_the_link() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
    let mut t = target(&d.path().join("link/sub/f"), 0o600);
    t.follow_symlinks = true;
    assert_eq!(apply(&t, b"x").unwrap(), Change::Created);
    assert_eq!(std::fs::read(real.join("sub/f")).unwrap(), b"x");
}

#[test]
fn world_writable_ancestor_is_refused_unless_sticky_and_root_owned() {
    let d = tempfile::tempdir().unwrap();
    let open = d.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
    let err = apply(&target(&open.join("f"), 0o600), b"x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("writable by every user"), "{err}");
    assert!(err.contains("chmod o-w"), "{err}");
    assert!(!open.join("f").exists());
    if is_root() {
        std::fs::set_permissions(&open, Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            apply(&target(&open.join("f"), 0o600), b"x").unwrap(),
            Change::Created
        );
    }
}

#[test]
fn ancestor_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let theirs = d.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let p = theirs.join("f");
    let err = apply(&target(&p, 0o600), b"x").unwrap_err().to_string();
    assert!(err.contains("theirs: "), "{err}");
    assert!(err.contains("uid 65534"), "{err}");
    assert!(err.contains("chown root"), "{err}");
    // Owned by the file's configured owner: trusted.
    let mut t = target(&p, 0o600);
    t.uid = Some(65534);
    assert_eq!(apply(&t, b"x").unwrap(), Change::Created);
}

#[test]
fn foreign_file_at_destination_lends_no_owner() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    std::fs::write(&p, b"").unwrap();
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    let staged = stage(&target(&p, 0o600), b"secret").unwrap().unwrap();
    let m = std::fs::metadata(staged.candidate_path()).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
    staged.commit().unwrap();
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
    // Same bytes but a foreign owner (hard-linked-free, single inode): the
    // owner is fixed to kvsync's.
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    let mut other = d.path().join("g");
    std::fs::write(&other, b"secret").unwrap();
    std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
    std::fs::rename(&other, &p).unwrap();
    other = p.clone();
    assert_eq!(
        plan(&target(&other, 0o600), b"secret").unwrap(),
        Change::Metadata
    );
    apply(&target(&other, 0o600), b"secret").unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().uid(), 0);
}

#[test]
fn hard_linked_destination_is_replaced_not_modified() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"same").unwrap();
    std::fs::set_permissions(&victim, Permissions::from_mode(0o644)).unwrap();
    let p = d.path().join("f");
    std::fs::hard_link(&victim, &p).unwrap();
    assert_eq!(apply(&target(&p, 0o600), b"same").unwrap(), Change::Updated);
    assert_eq!(mode_of(&victim), 0o644);
    assert_eq!(mode_of(&p), 0o600);
}

#[test]
fn stale_temp_files_are_swept() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    std::fs::write(d.path().join(".f.kvsync-abc123.tmp"), b"old").unwrap();
    std::fs::write(d.path().join(".g.kvsync-abc123.tmp"), b"other").unwrap();
    assert_eq!(sweep_stale_temps(&target(&p, 0o600)), 1);
    assert_eq!(
        temp_files(d.path()),
        vec![".g.kvsync-abc123.tmp".to_owned()]
    );
}

#[test]
fn fifo_at_destination_does_not_block_and_is_replaced() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(apply(&target(&p, 0o600), b"x").unwrap(), Change::Updated);
    assert_eq!(std::fs::read(&p).unwrap(), b"x");
}
