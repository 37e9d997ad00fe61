//! Writing untrusted trees beneath a root, never through a link (DESIGN.md
//! §8, docs/store.md "Writing untrusted trees").
//!
//! Every tree whose contents come from outside (archives, .debs, the
//! sources laid out in a build directory, a build's leftovers) is written
//! through a [`Dir`]: an open descriptor of a directory, with every path
//! resolved beneath it. `..` and absolute paths are refused before any
//! lookup; the rest resolves with openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS) where the kernel has it (Linux 5.6), else one
//! component at a time with `O_NOFOLLOW`. A symbolic link anywhere on the
//! way is an error, never followed; files are created with `O_EXCL` and
//! entries moved with `RENAME_NOREPLACE`, so nothing already there, a link
//! least of all, is written through.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

/// Why a path could not be resolved beneath its root. Components are shown
/// relative to the root.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path:?}: an absolute path or a `..` component would leave the tree")]
    NotBeneath { path: String },
    #[error("{component} is a symbolic link (imgrep never writes through one)")]
    Symlink { component: String },
    #[error("{component} is not a directory")]
    NotDir { component: String },
    #[error("{component} does not exist")]
    Missing { component: String },
    #[error("{component}: {error}")]
    Io { component: String, error: Errno },
}

impl From<PathError> for io::Error {
    fn from(e: PathError) -> io::Error {
        let kind = match &e {
            PathError::Missing { .. } => io::ErrorKind::NotFound,
            PathError::Io { error, .. } => io::Error::from(*error).kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// A symbolic link of a tree that resolves outside it.
#[derive(Debug, thiserror::Error)]
#[error("symbolic link {link} -> {target} resolves outside the tree")]
pub struct LinkEscapes {
    pub link: String,
    pub target: String,
}

/// Splits a relative path into its normal components (`.` and empty ones
/// dropped); refuses absolute paths and `..`.
pub fn components(raw: &[u8]) -> Result<Vec<Vec<u8>>, PathError> {
    let refuse = || PathError::NotBeneath { path: lossy(raw) };
    if raw.starts_with(b"/") {
        return Err(refuse());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refuse()),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

pub fn is_type(st: &FileStat, t: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == t
}

/// Cleared once openat2 turns out to be missing (ENOSYS) or filtered
/// (EPERM under a seccomp policy that predates it).
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// An open directory: the root of an untrusted tree, or a directory reached
/// beneath one.
#[derive(Debug)]
pub struct Dir(OwnedFd);

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A directory opened elsewhere (an in-memory directory init handed over).
impl From<OwnedFd> for Dir {
    fn from(fd: OwnedFd) -> Dir {
        Dir(fd)
    }
}

fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: called on a descriptor a system call just returned, which
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Dir {
    /// Opens the root of a tree. `path` is the caller's own (a temporary
    /// directory, a store entry): it is resolved as given.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir(owned(fd)))
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir(self.0.try_clone()?))
    }

    fn dup(&self) -> nix::Result<Dir> {
        nix::unistd::dup(self.0.as_raw_fd()).map(|fd| Dir(owned(fd)))
    }

    fn raw(&self) -> Option<std::os::fd::RawFd> {
        Some(self.0.as_raw_fd())
    }

    /// The directory `name` in this one, not a symbolic link.
    pub fn child(&self, name: &[u8]) -> nix::Result<Dir> {
        let fd = nix::fcntl::openat(
            self.raw(),
            os(name),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir(owned(fd)))
    }

    /// The directory at `rel` beneath this one.
    pub fn open_dir(&self, rel: &Path) -> Result<Dir, PathError> {
        self.walk(&components(rel.as_os_str().as_bytes())?, None)
    }

    /// The directory at `rel` beneath this one, creating missing directories
    /// with `mode` (less the umask) on the way.
    pub fn create_dirs(&self, rel: &Path, mode: u32) -> Result<Dir, PathError> {
        self.walk(&components(rel.as_os_str().as_bytes())?, Some(mode))
    }

    /// The directory `comps` (normal components, as [`components`] gives)
    /// beneath this one; with `create`, missing ones are made with that mode.
    pub fn walk(&self, comps: &[Vec<u8>], create: Option<u32>) -> Result<Dir, PathError> {
        let dup = || {
            self.dup().map_err(|error| PathError::Io {
                component: ".".into(),
                error,
            })
        };
        if comps.is_empty() {
            return dup();
        }
        if OPENAT2.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            match nix::fcntl::openat2(self.0.as_raw_fd(), os(&join(comps)), how) {
                Ok(fd) => return Ok(Dir(owned(fd))),
                Err(Errno::ENOSYS | Errno::EPERM) => OPENAT2.store(false, Ordering::Relaxed),
                // Missing directories to create, a link or a file on the
                // way: the walk below creates them or says which component.
                Err(_) => {}
            }
        }
        let mut cur = dup()?;
        for (i, c) in comps.iter().enumerate() {
            let shown = || lossy(&join(&comps[..=i]));
            let next = match cur.child(c) {
                Ok(d) => d,
                Err(Errno::ENOENT) => match create {
                    None => return Err(PathError::Missing { component: shown() }),
                    Some(mode) => {
                        match nix::sys::stat::mkdirat(
                            cur.raw(),
                            os(c),
                            Mode::from_bits_truncate(mode),
                        ) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(error) => {
                                return Err(PathError::Io {
                                    component: shown(),
                                    error,
                                })
                            }
                        }
                        cur.child(c).map_err(|e| cur.diagnose(c, e, shown()))?
                    }
                },
                Err(e) => return Err(cur.diagnose(c, e, shown())),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Why opening `name` as a directory failed with `e`.
    fn diagnose(&self, name: &[u8], e: Errno, component: String) -> PathError {
        match e {
            Errno::ELOOP | Errno::ENOTDIR => match self.stat(name) {
                Ok(Some(st)) if is_type(&st, SFlag::S_IFLNK) => PathError::Symlink { component },
                _ => PathError::NotDir { component },
            },
            Errno::ENOENT => PathError::Missing { component },
            error => PathError::Io { component, error },
        }
    }

    /// lstat of `name`; `None` if it does not exist.
    pub fn stat(&self, name: &[u8]) -> nix::Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(self.raw(), os(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names in this directory, `.` and `..` left out, sorted.
    pub fn names(&self) -> nix::Result<Vec<OsString>> {
        let dup = nix::unistd::dup(self.0.as_raw_fd())?;
        let mut d = nix::dir::Dir::from_fd(dup)?;
        let mut names = Vec::new();
        for e in d.iter() {
            let name = e?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates the file `name`, which must not exist (not even as a link).
    pub fn create_file(&self, name: &[u8], mode: u32) -> nix::Result<File> {
        let fd = nix::fcntl::openat(
            self.raw(),
            os(name),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        // SAFETY: `openat` just returned this descriptor.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Opens the regular file `name` for reading, not through a link.
    pub fn open_file(&self, name: &[u8]) -> nix::Result<File> {
        let fd = nix::fcntl::openat(
            self.raw(),
            os(name),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: `openat` just returned this descriptor.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn mkdir(&self, name: &[u8], mode: u32) -> nix::Result<()> {
        nix::sys::stat::mkdirat(self.raw(), os(name), Mode::from_bits_truncate(mode))
    }

    pub fn symlink(&self, name: &[u8], target: &[u8]) -> nix::Result<()> {
        nix::unistd::symlinkat(os(target), self.raw(), os(name))
    }

    pub fn read_link(&self, name: &[u8]) -> nix::Result<Vec<u8>> {
        nix::fcntl::readlinkat(self.raw(), os(name)).map(OsString::into_vec)
    }

    /// Sets the mtime of `name` without following it.
    pub fn set_mtime(&self, name: &[u8], mtime: &TimeSpec) -> nix::Result<()> {
        nix::sys::stat::utimensat(
            self.raw(),
            os(name),
            &TimeSpec::UTIME_OMIT,
            mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
    }

    pub fn set_mode(&self, mode: u32) -> nix::Result<()> {
        nix::sys::stat::fchmod(self.0.as_raw_fd(), Mode::from_bits_truncate(mode))
    }

    /// Sets this directory's own mtime.
    pub fn set_own_mtime(&self, mtime: &TimeSpec) -> nix::Result<()> {
        nix::sys::stat::futimens(self.0.as_raw_fd(), &TimeSpec::UTIME_OMIT, mtime)
    }

    /// Moves `name` to `to_name` in `to`; fails if that exists.
    pub fn rename_to(&self, name: &[u8], to: &Dir, to_name: &[u8]) -> nix::Result<()> {
        nix::fcntl::renameat2(
            self.raw(),
            os(name),
            to.raw(),
            os(to_name),
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
    }

    /// Removes `name`, recursively, never following a link; read-only
    /// directories are made writable first. Returns the bytes freed (the
    /// sizes of the non-directories removed, as lstat gives them).
    pub fn remove_all(&self, name: &[u8]) -> nix::Result<u64> {
        let Some(st) = self.stat(name)? else {
            return Ok(0);
        };
        if !is_type(&st, SFlag::S_IFDIR) {
            nix::unistd::unlinkat(self.raw(), os(name), UnlinkatFlags::NoRemoveDir)?;
            return Ok(st.st_size as u64);
        }
        let sub = self.child(name)?;
        if st.st_mode & 0o700 != 0o700 {
            sub.set_mode(0o700)?;
        }
        let mut bytes = 0;
        for child in sub.names()? {
            bytes += sub.remove_all(child.as_bytes())?;
        }
        nix::unistd::unlinkat(self.raw(), os(name), UnlinkatFlags::RemoveDir)?;
        Ok(bytes)
    }

    /// Whether the symbolic link `target`, placed in the directory
    /// `link_dir` (components beneath this one), resolves outside this
    /// directory, following the links already in the tree (at most 40, as
    /// the kernel). A component that does not exist counts as a directory,
    /// so a link that only fails to resolve today is judged as if it did.
    pub fn link_escapes(&self, link_dir: &[Vec<u8>], target: &[u8]) -> bool {
        if target.starts_with(b"/") {
            return true;
        }
        let mut cur: Vec<Vec<u8>> = link_dir.to_vec();
        let mut queue: VecDeque<Vec<u8>> = split_link(target).collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            if c == b".." {
                if cur.pop().is_none() {
                    return true;
                }
                continue;
            }
            let link = self
                .walk(&cur, None)
                .ok()
                .and_then(|d| d.read_link(&c).ok());
            let Some(link) = link else {
                cur.push(c);
                continue;
            };
            hops += 1;
            if hops > 40 || link.starts_with(b"/") {
                return true;
            }
            for (i, part) in split_link(&link).enumerate() {
                queue.insert(i, part);
            }
        }
        false
    }

    /// Checks that every symbolic link of the tree below this directory
    /// resolves inside it (as [`Dir::link_escapes`] judges).
    pub fn check_links(&self) -> Result<(), CheckError> {
        let mut path = Vec::new();
        self.check_links_in(self, &mut path)
    }

    fn check_links_in(&self, dir: &Dir, path: &mut Vec<Vec<u8>>) -> Result<(), CheckError> {
        let io = |path: &[Vec<u8>], e: Errno| CheckError::Io {
            path: lossy(&join(path)),
            error: e,
        };
        for name in dir.names().map_err(|e| io(path, e))? {
            let name = name.into_vec();
            let Some(st) = dir.stat(&name).map_err(|e| io(path, e))? else {
                continue;
            };
            if is_type(&st, SFlag::S_IFLNK) {
                let target = dir.read_link(&name).map_err(|e| io(path, e))?;
                if self.link_escapes(path, &target) {
                    path.push(name);
                    return Err(CheckError::Escapes(LinkEscapes {
                        link: lossy(&join(path)),
                        target: lossy(&target),
                    }));
                }
            } else if is_type(&st, SFlag::S_IFDIR) {
                let sub = dir.child(&name).map_err(|e| io(path, e))?;
                path.push(name);
                self.check_links_in(&sub, path)?;
                path.pop();
            }
        }
        Ok(())
    }
}

/// Why a tree failed [`Dir::check_links`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Escapes(LinkEscapes),
    #[error("{path}: {error}")]
    Io { path: String, error: Errno },
}

fn split_link(target: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    target
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// Why a tree operation (strip, merge, copy) failed, naming the entry
/// relative to the tree it was working on.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path} exists already (sources overlap)")]
    Exists { path: String },
    #[error("{path}: not a regular file, directory or symbolic link")]
    Special { path: String },
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
}

impl TreeError {
    fn io(path: &[Vec<u8>], error: impl Into<io::Error>) -> TreeError {
        TreeError::Io {
            path: if path.is_empty() {
                ".".into()
            } else {
                lossy(&join(path))
            },
            error: error.into(),
        }
    }
}

impl From<TreeError> for io::Error {
    fn from(e: TreeError) -> io::Error {
        let kind = match &e {
            TreeError::Exists { .. } => io::ErrorKind::AlreadyExists,
            TreeError::Special { .. } => io::ErrorKind::InvalidData,
            TreeError::Io { error, .. } => error.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

/// If `dir` holds exactly one entry and it is a directory (not a link),
/// moves that directory's contents up and removes it, as Nix's fetchzip
/// does. Returns whether it stripped. Links are checked again afterwards by
/// the caller ([`Dir::check_links`]): one that stayed inside the top
/// directory may leave the tree once it is one level up.
pub fn strip_single_top_dir(dir: &Dir) -> Result<bool, TreeError> {
    let here: &[Vec<u8>] = &[];
    let mut names = dir.names().map_err(|e| TreeError::io(here, e))?;
    if names.len() != 1 {
        return Ok(false);
    }
    let top = names.pop().expect("one name").into_vec();
    let at = [top.clone()];
    match dir.stat(&top).map_err(|e| TreeError::io(&at, e))? {
        Some(st) if is_type(&st, SFlag::S_IFDIR) => {}
        _ => return Ok(false),
    }
    let sub = dir.child(&top).map_err(|e| TreeError::io(&at, e))?;
    sub.set_mode(0o700).map_err(|e| TreeError::io(&at, e))?;
    let children = sub.names().map_err(|e| TreeError::io(&at, e))?;
    // Park the top directory under a name none of its children has.
    let parked = (0u32..)
        .map(|n| format!(".imgrep-strip-{n}").into_bytes())
        .find(|p| !children.iter().any(|c| c.as_bytes() == p.as_slice()))
        .expect("a free name");
    dir.rename_to(&top, dir, &parked)
        .map_err(|e| TreeError::io(&at, e))?;
    for name in children {
        sub.rename_to(name.as_bytes(), dir, name.as_bytes())
            .map_err(|e| TreeError::io(&[top.clone(), name.into_vec()], e))?;
    }
    nix::unistd::unlinkat(dir.raw(), os(&parked), UnlinkatFlags::RemoveDir)
        .map_err(|e| TreeError::io(&at, e))?;
    Ok(true)
}

/// Moves every entry of `from` into `to`, merging directories that both
/// hold (real directories both: a link is never entered); anything else
/// that both hold is an error (two sources overlap). Paths in errors are
/// relative to `to`.
pub fn merge_into(from: &Dir, to: &Dir) -> Result<(), TreeError> {
    merge_in(from, to, &mut Vec::new())
}

fn merge_in(from: &Dir, to: &Dir, path: &mut Vec<Vec<u8>>) -> Result<(), TreeError> {
    for name in from.names().map_err(|e| TreeError::io(path, e))? {
        let name = name.into_vec();
        path.push(name.clone());
        let theirs = to.stat(&name).map_err(|e| TreeError::io(path, e))?;
        let ours = from.stat(&name).map_err(|e| TreeError::io(path, e))?;
        match (theirs, ours) {
            (None, _) => match from.rename_to(&name, to, &name) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    return Err(TreeError::Exists {
                        path: lossy(&join(path)),
                    })
                }
                Err(e) => return Err(TreeError::io(path, e)),
            },
            (Some(t), Some(o)) if is_type(&t, SFlag::S_IFDIR) && is_type(&o, SFlag::S_IFDIR) => {
                let sub_from = from.child(&name).map_err(|e| TreeError::io(path, e))?;
                let sub_to = to.child(&name).map_err(|e| TreeError::io(path, e))?;
                merge_in(&sub_from, &sub_to, path)?;
            }
            _ => {
                return Err(TreeError::Exists {
                    path: lossy(&join(path)),
                })
            }
        }
        path.pop();
    }
    Ok(())
}

/// Copies the tree below `from` into `to`: regular files with their mode
/// less setuid and setgid (the trees copied are sources, which need none),
/// directories, and symbolic links as they are, all with their mtimes (make
/// compares them). Never follows a link on either side and never replaces
/// anything `to` holds. Hard links become separate files.
pub fn copy_tree(from: &Dir, to: &Dir) -> Result<(), TreeError> {
    copy_in(from, to, &mut Vec::new(), &mut vec![0; 128 * 1024])
}

fn copy_in(from: &Dir, to: &Dir, path: &mut Vec<Vec<u8>>, buf: &mut [u8]) -> Result<(), TreeError> {
    for name in from.names().map_err(|e| TreeError::io(path, e))? {
        let name = name.into_vec();
        path.push(name.clone());
        let err = |path: &[Vec<u8>], e: Errno| match e {
            Errno::EEXIST => TreeError::Exists {
                path: lossy(&join(path)),
            },
            e => TreeError::io(path, e),
        };
        let Some(st) = from.stat(&name).map_err(|e| err(path, e))? else {
            path.pop();
            continue;
        };
        let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
        let mode = st.st_mode & 0o7777;
        if is_type(&st, SFlag::S_IFDIR) {
            to.mkdir(&name, 0o700).map_err(|e| err(path, e))?;
            let sub_from = from.child(&name).map_err(|e| err(path, e))?;
            let sub_to = to.child(&name).map_err(|e| err(path, e))?;
            copy_in(&sub_from, &sub_to, path, buf)?;
            sub_to.set_mode(mode).map_err(|e| err(path, e))?;
            sub_to.set_own_mtime(&mtime).map_err(|e| err(path, e))?;
        } else if is_type(&st, SFlag::S_IFLNK) {
            let target = from.read_link(&name).map_err(|e| err(path, e))?;
            to.symlink(&name, &target).map_err(|e| err(path, e))?;
            to.set_mtime(&name, &mtime).map_err(|e| err(path, e))?;
        } else if is_type(&st, SFlag::S_IFREG) {
            let mut src = from.open_file(&name).map_err(|e| err(path, e))?;
            let mut dst = to.create_file(&name, 0o600).map_err(|e| err(path, e))?;
            copy_bytes(&mut src, &mut dst, buf).map_err(|e| TreeError::io(path, e))?;
            nix::sys::stat::fchmod(dst.as_raw_fd(), Mode::from_bits_truncate(mode & !0o6000))
                .map_err(|e| err(path, e))?;
            nix::sys::stat::futimens(dst.as_raw_fd(), &TimeSpec::UTIME_OMIT, &mtime)
                .map_err(|e| err(path, e))?;
        } else {
            return Err(TreeError::Special {
                path: lossy(&join(path)),
            });
        }
        path.pop();
    }
    Ok(())
}

fn copy_bytes(src: &mut File, dst: &mut File, buf: &mut [u8]) -> io::Result<()> {
    use std::io::Write;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        (t, d)
    }

    #[test]
    fn paths_never_leave_or_cross_a_link() {
        let (t, d) = tree();
        std::fs::create_dir(t.path().join("real")).unwrap();
        symlink("real", t.path().join("l")).unwrap();
        symlink("/", t.path().join("abs")).unwrap();
        std::fs::write(t.path().join("f"), b"").unwrap();
        for rel in ["../x", "/etc", "a/../../b"] {
            assert!(
                matches!(
                    d.create_dirs(Path::new(rel), 0o755),
                    Err(PathError::NotBeneath { .. })
                ),
                "{rel}"
            );
        }
        for rel in ["l", "l/x", "abs/tmp"] {
            let e = d.create_dirs(Path::new(rel), 0o755).unwrap_err();
            assert!(
                matches!(&e, PathError::Symlink { component } if component == rel.split('/').next().unwrap()),
                "{rel}: {e:?}"
            );
        }
        assert!(matches!(
            d.open_dir(Path::new("f/x")),
            Err(PathError::NotDir { .. })
        ));
        assert!(matches!(
            d.open_dir(Path::new("nope")),
            Err(PathError::Missing { .. })
        ));
        d.create_dirs(Path::new("real/a/b"), 0o755).unwrap();
        assert!(t.path().join("real/a/b").is_dir());
        // The walk without openat2 says the same.
        OPENAT2.store(false, Ordering::Relaxed);
        assert!(matches!(
            d.open_dir(Path::new("l/x")),
            Err(PathError::Symlink { .. })
        ));
        d.open_dir(Path::new("real/a/b")).unwrap();
        OPENAT2.store(true, Ordering::Relaxed);
    }

    #[test]
    fn links_are_judged_through_the_links_of_the_tree() {
        let (t, d) = tree();
        std::fs::create_dir(t.path().join("d")).unwrap();
        // Each alone stays inside; together `a` climbs out: `b` is the
        // root, `b/..` its parent.
        symlink("b/..", t.path().join("a")).unwrap();
        symlink(".", t.path().join("b")).unwrap();
        symlink("..", t.path().join("d/up")).unwrap();
        let e = d.check_links().unwrap_err().to_string();
        assert!(e.contains("a -> b/.."), "{e}");
        std::fs::remove_file(t.path().join("a")).unwrap();
        d.check_links().unwrap();
        let sub = d.open_dir(Path::new("d")).unwrap();
        assert!(sub.check_links().is_err(), "d/up leaves d");
    }

    #[test]
    fn merge_and_copy_never_write_through_links() {
        let (t, d) = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("to")).unwrap();
        std::fs::create_dir_all(t.path().join("from/x")).unwrap();
        std::fs::write(t.path().join("from/x/f"), b"new").unwrap();
        symlink(outside.path(), t.path().join("to/x")).unwrap();
        let from = d.open_dir(Path::new("from")).unwrap();
        let to = d.open_dir(Path::new("to")).unwrap();
        let e = merge_into(&from, &to).unwrap_err().to_string();
        assert!(e.contains("x exists already"), "{e}");
        let e = copy_tree(&from, &to).unwrap_err().to_string();
        assert!(e.contains("x exists already"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
