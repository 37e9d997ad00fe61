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
