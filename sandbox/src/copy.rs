//! Tree walks done inside the user namespace: the copy fallback that merges a
//! lower directory into the root when overlayfs is unavailable, and the
//! reclaim pass that gives a run's files back to the caller. Neither follows
//! symbolic links.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Copy `src` over `dst`: directories merge, anything else replaces what is
/// there, as a later layer does. Modes, owners (where mapped) and mtimes are
/// kept; hard links become separate files.
pub(crate) fn merge_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = src.symlink_metadata()?;
    let ft = meta.file_type();
    let existing = dst.symlink_metadata().ok();
    if let Some(old) = &existing {
        if !(ft.is_dir() && old.is_dir()) {
            if old.is_dir() {
                fs::remove_dir_all(dst)?;
            } else {
                fs::remove_file(dst)?;
            }
        }
    }
    if ft.is_dir() {
        if existing.as_ref().is_none_or(|m| !m.is_dir()) {
            fs::create_dir(dst)?;
        }
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            merge_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if ft.is_symlink() {
        symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        fs::copy(src, dst)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: special files cannot be copied into the root",
                src.display()
            ),
        ));
    }
    // Owners outside the mapping cannot be set: the entry stays ours.
    let _ = lchown(dst, Some(meta.uid()), Some(meta.gid()));
    if !ft.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(None, dst, &atime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// Copy into `dst` what it lacks of `src`: directories merge, an entry `dst`
/// has already stays, as an overlay's upper layer wins over its lowers.
pub(crate) fn fill_tree(src: &Path, dst: &Path) -> io::Result<()> {
    match dst.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => merge_tree(src, dst),
        Ok(m) if m.is_dir() && src.symlink_metadata()?.is_dir() => {
            for entry in fs::read_dir(src)? {
                let entry = entry?;
                fill_tree(&entry.path(), &dst.join(entry.file_name()))?;
            }
            Ok(())
        }
        other => other.map(drop),
    }
}

/// Make every entry under `path` owned by `uid`:`gid` and readable, writable
/// (and for directories searchable) by its owner. Runs after the tree ended,
/// so nothing can swap entries under the walk.
pub(crate) fn reclaim_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let meta = path.symlink_metadata()?;
    lchown(path, Some(uid), Some(gid))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let want = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.mode() & want != want {
        fs::set_permissions(
            path,
            fs::Permissions::from_mode((meta.mode() | want) & 0o7777),
        )?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            reclaim_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_keeps_what_the_upper_has() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(lower.join("d/sub")).unwrap();
        fs::write(lower.join("d/sub/f"), "lower").unwrap();
        fs::write(lower.join("d/shared"), "lower").unwrap();
        fs::create_dir_all(upper.join("d")).unwrap();
        fs::write(upper.join("d/shared"), "upper").unwrap();
        fill_tree(&lower, &upper).unwrap();
        assert_eq!(fs::read_to_string(upper.join("d/shared")).unwrap(), "upper");
        assert_eq!(fs::read_to_string(upper.join("d/sub/f")).unwrap(), "lower");
    }

    #[test]
    fn later_trees_replace_files_and_merge_directories() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, dst) = (t.path().join("a"), t.path().join("b"), t.path().join("dst"));
        fs::create_dir_all(a.join("etc/a-only")).unwrap();
        fs::write(a.join("etc/conf"), "a").unwrap();
        fs::write(a.join("was-file"), "a").unwrap();
        fs::create_dir_all(b.join("etc")).unwrap();
        fs::write(b.join("etc/conf"), "b").unwrap();
        fs::create_dir_all(b.join("was-file")).unwrap();
        symlink("conf", b.join("etc/link")).unwrap();
        fs::set_permissions(b.join("etc/conf"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::create_dir(&dst).unwrap();
        merge_tree(&a, &dst).unwrap();
        merge_tree(&b, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("etc/conf")).unwrap(), "b");
        assert!(dst.join("etc/a-only").is_dir());
        assert!(dst.join("was-file").is_dir());
        assert_eq!(
            fs::read_link(dst.join("etc/link")).unwrap(),
            Path::new("conf")
        );
        let meta = fs::metadata(dst.join("etc/conf")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o750);
        assert_eq!(
            meta.mtime(),
            fs::metadata(b.join("etc/conf")).unwrap().mtime()
        );
    }

    #[test]
    fn reclaim_makes_entries_usable_by_their_owner() {
        let t = tempfile::tempdir().unwrap();
        let locked = t.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::write(locked.join("f"), "x").unwrap();
        fs::set_permissions(locked.join("f"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        reclaim_tree(t.path(), uid, gid).unwrap();
        assert_eq!(fs::metadata(&locked).unwrap().mode() & 0o700, 0o700);
        assert_eq!(
            fs::metadata(locked.join("f")).unwrap().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&locked).unwrap();
    }
}
