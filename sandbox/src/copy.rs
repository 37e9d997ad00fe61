//! Tree walks done inside the user namespace: the copy fallback that merges a
//! lower directory into the root when overlayfs is unavailable, the copies
//! into and out of in-memory directories, and the reclaim pass that gives a
//! run's files back to the caller. None follows symbolic links.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// What [`merge_tree`] does with sockets, fifos and device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Specials {
    /// An error: trees that should hold none (layers, sources).
    Refuse,
    /// Leave them out: saving what a failed run left, where a socket or a
    /// fifo means nothing once its processes are gone.
    Skip,
}

/// Copy `src` over `dst`: directories merge, anything else replaces what is
/// there, as a later layer does. Modes, owners (where mapped) and mtimes are
/// kept; holes stay holes; hard links become separate files.
pub(crate) fn merge_tree(src: &Path, dst: &Path, specials: Specials) -> io::Result<()> {
    merge(src, dst, specials, &mut { u64::MAX })
}

/// [`merge_tree`] writing at most `limit` bytes of file data (holes are
/// free): a tree of hard links to one large file would otherwise expand on
/// the host without bound. Over the limit it fails with
/// [`io::ErrorKind::FileTooLarge`] and leaves the copy partial: the caller
/// removes it.
pub(crate) fn merge_tree_capped(
    src: &Path,
    dst: &Path,
    specials: Specials,
    limit: u64,
) -> io::Result<()> {
    let mut left = limit;
    merge(src, dst, specials, &mut left).map_err(|e| {
        if e.kind() == io::ErrorKind::FileTooLarge {
            io::Error::new(
                e.kind(),
                format!(
                    "more than {limit} bytes of file data to copy (hard links are copied \
                     as separate files); nothing was kept"
                ),
            )
        } else {
            e
        }
    })
}

fn merge(src: &Path, dst: &Path, specials: Specials, left: &mut u64) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", src.display()));
    let meta = src.symlink_metadata().map_err(named)?;
    let ft = meta.file_type();
    let special = !(ft.is_dir() || ft.is_file() || ft.is_symlink());
    match specials {
        _ if !special => {}
        Specials::Skip => return Ok(()),
        Specials::Refuse => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: a socket, fifo or device node cannot be copied",
                    src.display()
                ),
            ))
        }
    }
    let existing = dst.symlink_metadata().ok();
    if let Some(old) = &existing {
        if !(ft.is_dir() && old.is_dir()) {
            if old.is_dir() {
                fs::remove_dir_all(dst).map_err(named)?;
            } else {
                fs::remove_file(dst).map_err(named)?;
            }
        }
    }
    if ft.is_dir() {
        if existing.as_ref().is_none_or(|m| !m.is_dir()) {
            fs::create_dir(dst).map_err(named)?;
        }
        for entry in fs::read_dir(src).map_err(named)? {
            let entry = entry.map_err(named)?;
            merge(&entry.path(), &dst.join(entry.file_name()), specials, left)?;
        }
    } else if ft.is_symlink() {
        symlink(fs::read_link(src).map_err(named)?, dst).map_err(named)?;
    } else {
        copy_sparse(src, dst, left).map_err(|e| match e.kind() {
            io::ErrorKind::FileTooLarge => e,
            _ => named(e),
        })?;
    }
    // Owners outside the mapping cannot be set: the entry stays ours.
    let _ = lchown(dst, Some(meta.uid()), Some(meta.gid()));
    if !ft.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(named)?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(None, dst, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| named(e.into()))
}

/// Copy the regular file `src` to the new file `dst`, only its data
/// extents (SEEK_DATA/SEEK_HOLE): a sparse file stays sparse. Each data
/// byte is taken from `left`.
fn copy_sparse(src: &Path, dst: &Path, left: &mut u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = fs::File::open(src)?;
    let len = from.metadata()?.len();
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(from.as_raw_fd(), pos, libc::SEEK_DATA) };
        let data = match data {
            d if d >= 0 => d,
            _ => match io::Error::last_os_error().raw_os_error() {
                // No data after pos: the rest is a hole.
                Some(libc::ENXIO) => break,
                // No hole support: the whole rest is data.
                Some(libc::EINVAL) => pos,
                _ => return Err(io::Error::last_os_error()),
            },
        };
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole > data { hole } else { len as i64 };
        let n = (end - data) as u64;
        if n > *left {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "copy limit"));
        }
        *left -= n;
        copy_range(&from, &to, data, n)?;
        pos = end;
    }
    to.set_len(len)
}

/// Copy `n` bytes at `offset` of `from` to the same offset of `to`.
fn copy_range(from: &fs::File, to: &fs::File, offset: i64, n: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; n.min(1 << 20) as usize];
    let mut done = 0u64;
    while done < n {
        let want = (n - done).min(buf.len() as u64) as usize;
        let at = offset as u64 + done;
        let got = from.read_at(&mut buf[..want], at)?;
        if got == 0 {
            break; // the file shrank: what is left is copied
        }
        to.write_all_at(&buf[..got], at)?;
        done += got as u64;
    }
    Ok(())
}

/// Copy into `dst` what it lacks of `src`: directories merge, an entry `dst`
/// has already stays, as an overlay's upper layer wins over its lowers.
pub(crate) fn fill_tree(src: &Path, dst: &Path) -> io::Result<()> {
    match dst.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => merge_tree(src, dst, Specials::Refuse),
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
        merge_tree(&a, &dst, Specials::Refuse).unwrap();
        merge_tree(&b, &dst, Specials::Refuse).unwrap();
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
