//! Tree walks done inside the user namespace: the copy fallback that merges a
//! lower directory into the root when overlayfs is unavailable, the copies
//! into and out of in-memory directories, and the reclaim pass that gives a
//! run's files back to the caller. None follows symbolic links.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

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
/// (and for directories searchable) by its owner, with no setuid or setgid
/// bit and no file capability left (see [`strip_tree`]).
pub(crate) fn reclaim_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    walk_beneath(path, &mut |fd, st| {
        let ft = st.st_mode & libc::S_IFMT;
        // Only where the owner differs: a kept scratch's work directory is
        // reclaimed after every run, and each chown is a metadata write.
        // The bits and capabilities an unchanged owner keeps go below.
        if (st.st_uid, st.st_gid) != (uid, gid) {
            chown_fd(fd, uid, gid)?;
        }
        if ft == libc::S_IFLNK {
            return Ok(());
        }
        let dir = ft == libc::S_IFDIR;
        let want = if dir { 0o700 } else { 0o600 };
        // chown(2) already dropped setuid and capabilities: never put them back.
        let kept = if dir { 0o7777 } else { 0o1777 };
        let mode = st.st_mode & 0o7777;
        if mode & want != want || mode & !kept != 0 {
            chmod_fd(fd, (mode | want) & kept)?;
        }
        if ft == libc::S_IFREG {
            drop_capabilities(fd)?;
        }
        Ok(())
    })
}

/// Give `path` and everything beneath it to `uid`:`gid`, unless `path`
/// itself has that owner already: its entries first and `path` last, so an
/// interrupted pass is redone by the next. Modes stay, except that chown(2)
/// drops setuid, setgid and file capabilities of what it changes.
pub(crate) fn own_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let meta = path.symlink_metadata()?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(());
    }
    if meta.is_dir() {
        let dir = open_at(None, path.as_os_str(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        own_entries(&dir, path, uid, gid)?;
    }
    lchown(path, Some(uid), Some(gid))
}

/// Gives every entry beneath the open directory `dir` to `uid`:`gid`: one
/// fchownat(2) per entry, by its name in its directory, never following a
/// link (the entry itself changes owner); subdirectories are opened with
/// O_NOFOLLOW from their parent. A build's /build holds ~30,000 entries,
/// and an open, a stat and a close each cost as much as the chown.
fn own_entries(dir: &OwnedFd, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    use nix::dir::Type;
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut subdirs = Vec::new();
    let mut entries = nix::dir::Dir::from_fd(dir.try_clone().map_err(named)?.into_raw_fd())
        .map_err(|e| named(e.into()))?;
    for entry in entries.iter() {
        let entry = entry.map_err(|e| named(e.into()))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        // SAFETY: a NUL-terminated name relative to a descriptor we own.
        let r = unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        let name = std::ffi::OsStr::from_bytes(name.to_bytes());
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(named(io::Error::new(
                e.kind(),
                format!("{}: {e}", name.to_string_lossy()),
            )));
        }
        let is_dir = match entry.file_type() {
            Some(t) => t == Type::Directory,
            None => nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
        };
        if is_dir {
            subdirs.push(name.to_owned());
        }
    }
    for name in subdirs {
        let sub = match open_at(Some(dir), &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
            Ok(sub) => sub,
            // A directory its owner made unreadable keeps what it holds.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => continue,
            Err(e) => return Err(named(e)),
        };
        own_entries(&sub, &path.join(&name), uid, gid)?;
    }
    Ok(())
}

/// Take away every privilege a tree written by a sandbox could carry onto
/// the host: the setuid and setgid bits of everything but directories (a
/// setgid directory only passes its group on) and file capabilities
/// (`security.capability`).
pub(crate) fn strip_tree(path: &Path) -> io::Result<()> {
    walk_beneath(path, &mut |fd, st| {
        let ft = st.st_mode & libc::S_IFMT;
        if ft == libc::S_IFDIR || ft == libc::S_IFLNK {
            return Ok(());
        }
        if st.st_mode & 0o6000 != 0 {
            chmod_fd(fd, st.st_mode & 0o1777)?;
        }
        if ft == libc::S_IFREG {
            drop_capabilities(fd)?;
        }
        Ok(())
    })
}

/// Calls `visit` on `path` and every entry beneath it, each opened with
/// O_PATH|O_NOFOLLOW, a directory before its contents (which it may make
/// readable first). Every entry is reached from its parent's descriptor and
/// no symbolic link is followed, so a tree that changes meanwhile cannot
/// lead the walk, or what `visit` changes, outside `path`.
fn walk_beneath(
    path: &Path,
    visit: &mut dyn FnMut(&OwnedFd, &libc::stat) -> io::Result<()>,
) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let fd = open_at(None, path.as_os_str(), OFlag::O_PATH).map_err(named)?;
    walk_fd(fd, path, visit)
}

fn walk_fd(
    fd: OwnedFd,
    path: &Path,
    visit: &mut dyn FnMut(&OwnedFd, &libc::stat) -> io::Result<()>,
) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| named(e.into()))?;
    visit(&fd, &st).map_err(named)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Ok(());
    }
    // Reopen the very directory visited (not a path that may have changed)
    // to read it.
    let dir = match open_at(
        Some(&fd),
        std::ffi::OsStr::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
    ) {
        Ok(dir) => dir,
        // A directory its owner made unreadable (and `visit` left so) keeps
        // everyone but its owner out of what it holds.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(()),
        Err(e) => return Err(named(e)),
    };
    let mut names = Vec::new();
    for entry in nix::dir::Dir::from_fd(dir.try_clone().map_err(named)?.into_raw_fd())
        .map_err(|e| named(e.into()))?
        .iter()
    {
        let entry = entry.map_err(|e| named(e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsStr::from_bytes(name).to_owned());
        }
    }
    // Every entry, even after one failed: the first error is reported.
    let mut first = None;
    for name in names {
        let done = open_at(Some(&dir), &name, OFlag::O_PATH)
            .map_err(named)
            .and_then(|child| walk_fd(child, &path.join(&name), visit));
        if let Err(e) = done {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// openat(2) with O_NOFOLLOW|O_CLOEXEC added; relative to the working
/// directory without `dir`.
fn open_at(dir: Option<&OwnedFd>, name: &std::ffi::OsStr, flags: OFlag) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        dir.map(|d| d.as_raw_fd()),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path of an O_PATH descriptor that system calls without an fd form
/// (chmod, removexattr) resolve to exactly its inode.
fn fd_path(fd: &OwnedFd) -> std::ffi::CString {
    std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// lchown(2) of the entry `fd` (O_PATH) itself, a symbolic link included.
fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: an empty NUL-terminated path relative to a descriptor we own.
    let r = unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn chmod_fd(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::chmod(fd_path(fd).as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Remove the `security.capability` attribute of the file `fd`, if it has one.
fn drop_capabilities(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: NUL-terminated strings that outlive the call.
    if unsafe { libc::removexattr(fd_path(fd).as_ptr(), c"security.capability".as_ptr()) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(()),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tree_gives_every_entry_and_never_what_a_link_names() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: own_tree_gives_every_entry_and_never_what_a_link_names: chown to other ids needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (tree, outside) = (t.path().join("tree"), t.path().join("outside"));
        fs::create_dir_all(tree.join("a/b/c")).unwrap();
        fs::write(tree.join("a/b/c/f"), "x").unwrap();
        fs::write(tree.join("top"), "y").unwrap();
        fs::write(&outside, "z").unwrap();
        symlink(&outside, tree.join("a/link")).unwrap();
        symlink("b", tree.join("a/dirlink")).unwrap();
        fs::set_permissions(tree.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        let (uid, gid) = (2_130_706_432, 2_130_706_433);
        own_tree(&tree, uid, gid).unwrap();
        for rel in [
            "",
            "top",
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/f",
            "a/link",
            "a/dirlink",
        ] {
            let m = tree.join(rel).symlink_metadata().unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{rel}");
        }
        let m = outside.metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "a link's target was given away");
        // Owned already at the top: left as it is (the pass ran to its end).
        fs::write(tree.join("late"), "w").unwrap();
        own_tree(&tree, uid, gid).unwrap();
        assert_eq!(tree.join("late").metadata().unwrap().uid(), 0);
    }

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
    fn strip_takes_setuid_and_setgid_never_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let (tree, outside) = (t.path().join("tree"), t.path().join("outside"));
        fs::create_dir_all(tree.join("d")).unwrap();
        fs::set_permissions(tree.join("d"), fs::Permissions::from_mode(0o2755)).unwrap();
        for (name, mode) in [("d/suid", 0o4755), ("sgid", 0o2711)] {
            fs::write(tree.join(name), "x").unwrap();
            fs::set_permissions(tree.join(name), fs::Permissions::from_mode(mode)).unwrap();
        }
        fs::write(&outside, "x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o4755)).unwrap();
        symlink(&outside, tree.join("link")).unwrap();
        strip_tree(&tree).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&tree.join("d/suid")), 0o755);
        assert_eq!(mode(&tree.join("sgid")), 0o711);
        // A setgid directory only passes its group on: kept.
        assert_eq!(mode(&tree.join("d")), 0o2755);
        assert_eq!(mode(&outside), 0o4755, "followed a link out of the tree");
    }

    #[test]
    fn reclaim_makes_entries_usable_by_their_owner() {
        let t = tempfile::tempdir().unwrap();
        let locked = t.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::write(locked.join("f"), "x").unwrap();
        fs::set_permissions(locked.join("f"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        // Owned by the reclaiming ids already, so no chown(2) drops the bits.
        for (name, special) in [("suid", 0o4755), ("sgid", 0o2755)] {
            fs::write(t.path().join(name), "x").unwrap();
            fs::set_permissions(t.path().join(name), fs::Permissions::from_mode(special)).unwrap();
        }
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        reclaim_tree(t.path(), uid, gid).unwrap();
        for name in ["suid", "sgid"] {
            assert_eq!(
                fs::metadata(t.path().join(name)).unwrap().mode() & 0o7777,
                0o755,
                "{name}"
            );
        }
        assert_eq!(fs::metadata(&locked).unwrap().mode() & 0o700, 0o700);
        assert_eq!(
            fs::metadata(locked.join("f")).unwrap().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&locked).unwrap();
    }
}
