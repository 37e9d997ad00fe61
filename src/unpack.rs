//! Safe unpacking of tar streams into a directory (docs/store.md, "Safe
//! unpacking").
//!
//! Nothing is ever written outside the target: every path is resolved
//! beneath a descriptor of the target (`crate::beneath`), so a symbolic link
//! (from this archive or one unpacked before) is never followed while
//! writing; files are created with `O_EXCL`. Each hostile or malformed entry
//! is refused with an error naming it.

/// The strict tar reader under the unpacker; public for the fuzz targets.
pub mod tarstream;
pub mod zip;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use crate::beneath::{self, is_type, lossy, Dir, PathError};

pub use tarstream::TarError;
use tarstream::{Header, Kind, TarStream};

use crate::digest::Digest;

/// Where symbolic links may point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Every link must resolve inside the target (following links already
    /// unpacked): no absolute targets, no `..` climbing out. For sources.
    Contained,
    /// The target is a root file system: absolute targets and `..` are read
    /// against that root inside a container, so any target is allowed. The
    /// unpacker still never follows one. For layers and .deb data.
    RootFs,
}

/// What to do with device nodes and fifos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialFiles {
    Refuse,
    /// Skip them, listing each in `UnpackReport::skipped` (for .deb data,
    /// where Debian ships none; layers never may hold them).
    Skip,
}

/// What `.wh.` names mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Ordinary file names (sources).
    Ordinary,
    /// OCI whiteouts, applied to what the target already holds (stacking
    /// layers into one root).
    Apply,
    /// Refused: a layer unpacked alone has nothing to white out.
    Refuse,
}

/// What becomes of the setuid and setgid bits of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetId {
    /// Kept: an image may declare them (layers, .deb data).
    Keep,
    /// Dropped: a source needs none (a NAR cannot even record them, and Nix
    /// drops them), and a setuid file that root unpacked into the store
    /// would be a setuid-root program on the host.
    Strip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    pub symlinks: Symlinks,
    pub special_files: SpecialFiles,
    pub whiteouts: Whiteouts,
    pub set_id: SetId,
}

impl UnpackOptions {
    /// Source archives.
    pub const SOURCE: UnpackOptions = UnpackOptions {
        symlinks: Symlinks::Contained,
        special_files: SpecialFiles::Refuse,
        whiteouts: Whiteouts::Ordinary,
        set_id: SetId::Strip,
    };
    /// A .deb's data.tar, unpacked into an image root.
    pub const DEB: UnpackOptions = UnpackOptions {
        symlinks: Symlinks::RootFs,
        special_files: SpecialFiles::Skip,
        whiteouts: Whiteouts::Ordinary,
        set_id: SetId::Keep,
    };
    /// An OCI layer stacked onto the layers below it in the target.
    pub const LAYER: UnpackOptions = UnpackOptions {
        symlinks: Symlinks::RootFs,
        special_files: SpecialFiles::Refuse,
        whiteouts: Whiteouts::Apply,
        set_id: SetId::Keep,
    };
    /// An OCI layer unpacked alone (the store's layer cache).
    pub const LAYER_ALONE: UnpackOptions = UnpackOptions {
        symlinks: Symlinks::RootFs,
        special_files: SpecialFiles::Refuse,
        whiteouts: Whiteouts::Refuse,
        set_id: SetId::Keep,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// Members unpacked (whiteouts included, skipped ones not).
    pub entries: u64,
    /// sha256 of the whole uncompressed stream: a layer's diff_id.
    pub diff_id: Digest,
    /// Length of the uncompressed stream.
    pub size: u64,
    /// Members skipped under `SpecialFiles::Skip`, with the reason.
    pub skipped: Vec<String>,
}

/// Why an entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("its path contains `..`")]
    DotDot,
    #[error("its path is absolute")]
    Absolute,
    #[error("it names the target directory itself")]
    Root,
    #[error("symbolic link to {target:?} resolves outside the target directory")]
    SymlinkEscapes { target: String },
    #[error("its parent {component:?} is a symbolic link (imgrep never writes through one)")]
    ThroughSymlink { component: String },
    #[error("its parent {component:?} is not a directory")]
    ParentNotDir { component: String },
    #[error("hard link target {target:?} {why}")]
    HardLink { target: String, why: &'static str },
    #[error("device nodes are not allowed")]
    Device,
    #[error("fifos are not allowed")]
    Fifo,
    #[error("duplicate entry: the archive already had this path")]
    Duplicate,
    #[error("it would replace a directory that earlier entries of this archive populated")]
    ReplacesPopulatedDir,
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(char),
    #[error("whiteouts are not allowed here (a layer unpacked alone)")]
    Whiteout,
    #[error("whiteout of a path that this same layer creates")]
    WhiteoutConflict,
    #[error("malformed whiteout name")]
    BadWhiteout,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: Refusal },
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("entry {entry:?}: {error}")]
    Io { entry: String, error: io::Error },
    #[error("{path}: {error}")]
    Target { path: PathBuf, error: io::Error },
    #[error("subtree {0:?}: expected a relative path without `..`")]
    Subtree(String),
}

fn refused(entry: &[u8], reason: Refusal) -> UnpackError {
    UnpackError::Refused {
        entry: lossy(entry),
        reason,
    }
}

/// An entry refused because the walk to its parent failed.
fn walk_refusal(entry: &[u8], e: PathError) -> UnpackError {
    match e {
        PathError::Symlink { component } => refused(entry, Refusal::ThroughSymlink { component }),
        PathError::NotDir { component } => refused(entry, Refusal::ParentNotDir { component }),
        PathError::NotBeneath { .. } => refused(entry, Refusal::DotDot),
        PathError::Missing { .. } => io_at(entry)(Errno::ENOENT),
        PathError::Io { error, .. } => io_at(entry)(error),
    }
}

fn io_at(entry: &[u8]) -> impl FnOnce(Errno) -> UnpackError + '_ {
    move |e| UnpackError::Io {
        entry: lossy(entry),
        error: io::Error::from(e),
    }
}

/// Unpacks an uncompressed tar stream into the existing directory `target`.
pub fn unpack<R: Read>(
    reader: R,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack_subtree(reader, target, opts, "")
}

/// Unpacks only the members under `subtree` (a relative path of the
/// archive, `""` for all of it) into `target`, as if `subtree` were the
/// archive's root: `subtree/a/b` lands at `target/a/b`, other members are
/// read past, never written. Every rule holds against `target`, so with
/// `Symlinks::Contained` no link may leave the subtree, and a hard link to a
/// member outside it is refused. `entries` counts the members unpacked; 0
/// means the archive has nothing under `subtree`.
pub fn unpack_subtree<R: Read>(
    reader: R,
    target: &Path,
    opts: &UnpackOptions,
    subtree: &str,
) -> Result<UnpackReport, UnpackError> {
    let root = Dir::open(target).map_err(|source| UnpackError::Target {
        path: target.to_owned(),
        error: source,
    })?;
    unpack_in(reader, root, opts, subtree)
}

/// [`unpack_subtree`] into the open directory `root`, whose contents the
/// unpacker judges as it does a path's (an in-memory directory of a
/// sandbox has no path here).
fn unpack_in<R: Read>(
    reader: R,
    root: Dir,
    opts: &UnpackOptions,
    subtree: &str,
) -> Result<UnpackReport, UnpackError> {
    let subtree =
        components(subtree.as_bytes()).map_err(|_| UnpackError::Subtree(subtree.to_owned()))?;
    let mut u = Unpacker {
        root,
        subtree,
        opts: *opts,
        entries: HashSet::new(),
        touched: HashSet::new(),
        dirs: Vec::new(),
        symlinks: Vec::new(),
        last: None,
        skipped: Vec::new(),
        count: 0,
        buf: vec![0; 128 * 1024],
    };
    let mut tar = TarStream::new(reader);
    while let Some(h) = tar.next_header()? {
        u.entry(&mut tar, h)?;
    }
    u.finish()?;
    let (diff_id, size) = tar.finish()?;
    Ok(UnpackReport {
        entries: u.count,
        diff_id,
        size,
        skipped: u.skipped,
    })
}

/// Unpacks the archive file at `path` (compression detected by magic
/// bytes, docs/fetch.md) into the existing directory `target`.
pub fn unpack_file(
    path: &Path,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack(open_archive(path)?, target, opts)
}

/// [`unpack_file`] into the open, existing directory `target`.
pub fn unpack_file_into(
    path: &Path,
    target: Dir,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack_in(open_archive(path)?, target, opts, "")
}

/// The archive at `path`, decompressed as `archive::open` detects.
fn open_archive(path: &Path) -> Result<Box<dyn Read>, UnpackError> {
    let (_, reader) = crate::archive::open(path).map_err(|source| UnpackError::Target {
        path: path.to_owned(),
        error: source,
    })?;
    Ok(reader)
}

struct Unpacker {
    root: Dir,
    /// Components of the archive path unpacked as the target's root (empty:
    /// the whole archive).
    subtree: Vec<Vec<u8>>,
    opts: UnpackOptions,
    /// Normalised paths of the members seen (duplicate detection).
    entries: HashSet<Vec<u8>>,
    /// Members and all their ancestors: what this archive populates.
    touched: HashSet<Vec<u8>>,
    /// Directories whose mode and mtime are set at the end, when nothing
    /// more needs to be written into them.
    dirs: Vec<(Vec<Vec<u8>>, u32, i64)>,
    symlinks: Vec<Vec<Vec<u8>>>,
    /// The last parent directory written into, still open.
    last: Option<(Vec<Vec<u8>>, Dir)>,
    skipped: Vec<String>,
    count: u64,
    buf: Vec<u8>,
}

/// Splits an entry path into normal components; refuses absolute paths and `..`.
fn components(raw: &[u8]) -> Result<Vec<Vec<u8>>, Refusal> {
    if raw.starts_with(b"/") {
        return Err(Refusal::Absolute);
    }
    beneath::components(raw).map_err(|_| Refusal::DotDot)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn timespec(secs: i64) -> TimeSpec {
    TimeSpec::new(secs, 0)
}

impl Unpacker {
    /// The parent directory of an entry, created if missing. Archives list
    /// siblings together, so the last parent is kept open: one dup instead
    /// of a walk from the top. Any removal drops it (`self.last = None`).
    fn walk_for_entry(&mut self, entry: &[u8], comps: &[Vec<u8>]) -> Result<Dir, UnpackError> {
        if let Some((last, fd)) = &self.last {
            if last == comps {
                return fd.try_clone().map_err(|source| UnpackError::Io {
                    entry: lossy(entry),
                    error: source,
                });
            }
        }
        let fd = self
            .root
            .walk(comps, Some(0o755))
            .map_err(|e| walk_refusal(entry, e))?;
        let copy = fd.try_clone().map_err(|source| UnpackError::Io {
            entry: lossy(entry),
            error: source,
        })?;
        self.last = Some((comps.to_vec(), copy));
        Ok(fd)
    }

    fn entry<R: Read>(&mut self, tar: &mut TarStream<R>, mut h: Header) -> Result<(), UnpackError> {
        let entry = h.path.clone();
        let mut comps = components(&h.path).map_err(|r| refused(&entry, r))?;
        if !self.subtree.is_empty() {
            let Some(rest) = comps.strip_prefix(self.subtree.as_slice()) else {
                // Outside the subtree: read past, never written.
                return Ok(());
            };
            comps = rest.to_vec();
            if h.kind == Kind::HardLink {
                let target = components(&h.link).ok();
                let inside = target
                    .as_deref()
                    .and_then(|t| t.strip_prefix(self.subtree.as_slice()));
                match inside {
                    Some(t) if !t.is_empty() => h.link = join(t),
                    _ => {
                        return Err(refused(
                            &entry,
                            Refusal::HardLink {
                                target: lossy(&h.link),
                                why: "lies outside the subtree unpacked",
                            },
                        ))
                    }
                }
            }
        }
        let Some((name, parent)) = comps.split_last() else {
            // "./" as the first member of .deb data: the target itself.
            return match h.kind {
                Kind::Directory => Ok(()),
                _ => Err(refused(&entry, Refusal::Root)),
            };
        };
        let key = join(&comps);
        if !self.entries.insert(key.clone()) {
            return Err(refused(&entry, Refusal::Duplicate));
        }
        match h.kind {
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                let reason = if h.kind == Kind::Fifo {
                    Refusal::Fifo
                } else {
                    Refusal::Device
                };
                return match self.opts.special_files {
                    SpecialFiles::Refuse => Err(refused(&entry, reason)),
                    SpecialFiles::Skip => {
                        self.skipped.push(format!("{}: {reason}", lossy(&entry)));
                        Ok(())
                    }
                };
            }
            Kind::Other(c) => return Err(refused(&entry, Refusal::UnsupportedType(c as char))),
            _ => {}
        }
        if name.starts_with(b".wh.") && self.opts.whiteouts != Whiteouts::Ordinary {
            if self.opts.whiteouts == Whiteouts::Refuse {
                return Err(refused(&entry, Refusal::Whiteout));
            }
            self.count += 1;
            return self.whiteout(&entry, parent, name);
        }
        for i in 1..=comps.len() {
            self.touched.insert(join(&comps[..i]));
        }
        let dir = self.walk_for_entry(&entry, parent)?;
        self.count += 1;

        let existing = dir.stat(name).map_err(io_at(&entry))?;
        if let Some(st) = existing {
            let keep_dir = h.kind == Kind::Directory && is_type(&st, SFlag::S_IFDIR);
            if !keep_dir {
                if is_type(&st, SFlag::S_IFDIR)
                    && self
                        .touched
                        .iter()
                        .any(|t| t.len() > key.len() && t.starts_with(&key) && t[key.len()] == b'/')
                {
                    return Err(refused(&entry, Refusal::ReplacesPopulatedDir));
                }
                self.last = None;
                dir.remove_all(name).map_err(io_at(&entry))?;
            }
        }
        match h.kind {
            Kind::Directory => {
                match dir.mkdir(name, 0o700) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io_at(&entry)(e)),
                }
                self.dirs.push((comps.clone(), h.mode, h.mtime));
            }
            Kind::Regular => {
                let mut file = dir.create_file(name, 0o600).map_err(io_at(&entry))?;
                loop {
                    let n = tar.read_data(&mut self.buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n])
                        .map_err(|source| UnpackError::Io {
                            entry: lossy(&entry),
                            error: source,
                        })?;
                }
                let mode = match self.opts.set_id {
                    SetId::Keep => h.mode,
                    SetId::Strip => h.mode & !0o6000,
                };
                nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))
                    .map_err(io_at(&entry))?;
                nix::sys::stat::futimens(
                    file.as_raw_fd(),
                    &TimeSpec::UTIME_OMIT,
                    &timespec(h.mtime),
                )
                .map_err(io_at(&entry))?;
            }
            Kind::Symlink => {
                if self.opts.symlinks == Symlinks::Contained
                    && self.root.link_escapes(parent, &h.link)
                {
                    return Err(refused(
                        &entry,
                        Refusal::SymlinkEscapes {
                            target: lossy(&h.link),
                        },
                    ));
                }
                dir.symlink(name, &h.link).map_err(io_at(&entry))?;
                dir.set_mtime(name, &timespec(h.mtime))
                    .map_err(io_at(&entry))?;
                self.symlinks.push(comps.clone());
            }
            Kind::HardLink => self.hard_link(&entry, &comps, &dir, name, &h.link)?,
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo | Kind::Other(_) => {
                unreachable!("handled above")
            }
        }
        Ok(())
    }

    fn hard_link(
        &mut self,
        entry: &[u8],
        comps: &[Vec<u8>],
        dir: &Dir,
        name: &[u8],
        link: &[u8],
    ) -> Result<(), UnpackError> {
        let bad = |why| {
            refused(
                entry,
                Refusal::HardLink {
                    target: lossy(link),
                    why,
                },
            )
        };
        let tcomps = components(link).map_err(|_| bad("leaves the target directory"))?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(bad("names the target directory"));
        };
        if tcomps == comps {
            return Err(bad("is the entry itself"));
        }
        let tdir = self.root.walk(tparent, None).map_err(|e| match e {
            PathError::Symlink { .. } => bad("lies behind a symbolic link"),
            PathError::Io { error, .. } => io_at(entry)(error),
            _ => bad("does not exist"),
        })?;
        match tdir.stat(tname).map_err(io_at(entry))? {
            None => return Err(bad("does not exist")),
            Some(st) if !is_type(&st, SFlag::S_IFREG) => return Err(bad("is not a regular file")),
            Some(_) => {}
        }
        nix::unistd::linkat(
            Some(tdir.as_fd().as_raw_fd()),
            os(tname),
            Some(dir.as_fd().as_raw_fd()),
            os(name),
            AtFlags::empty(),
        )
        .map_err(io_at(entry))
    }

    fn whiteout(
        &mut self,
        entry: &[u8],
        parent: &[Vec<u8>],
        name: &[u8],
    ) -> Result<(), UnpackError> {
        let dir = match self.root.walk(parent, None) {
            Ok(d) => d,
            // Whiting out inside a directory that does not exist: nothing to do.
            Err(PathError::Missing { .. }) => return Ok(()),
            Err(e) => return Err(walk_refusal(entry, e)),
        };
        if name == b".wh..wh..opq" {
            self.last = None;
            let prefix = join(parent);
            return self.remove_unseen(&dir, &prefix).map_err(io_at(entry));
        }
        let victim = &name[4..];
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(refused(entry, Refusal::BadWhiteout));
        }
        let mut key = join(parent);
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(victim);
        if self.touched.contains(&key) {
            return Err(refused(entry, Refusal::WhiteoutConflict));
        }
        self.last = None;
        dir.remove_all(victim).map(drop).map_err(io_at(entry))
    }

    /// Opaque whiteout: removes what lower layers put under `dir`, keeping
    /// what this layer populates.
    fn remove_unseen(&self, dir: &Dir, prefix: &[u8]) -> nix::Result<()> {
        for child in dir.names()? {
            let mut key = prefix.to_vec();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(child.as_bytes());
            if !self.touched.contains(&key) {
                dir.remove_all(child.as_bytes())?;
            } else if dir
                .stat(child.as_bytes())?
                .is_some_and(|st| is_type(&st, SFlag::S_IFDIR))
            {
                let sub = dir.child(child.as_bytes())?;
                self.remove_unseen(&sub, &key)?;
            }
        }
        Ok(())
    }

    /// The target of `dir/name` if it is a symbolic link inside the tree.
    fn readlink_in_tree(&self, dir: &[Vec<u8>], name: &[u8]) -> Option<Vec<u8>> {
        self.root.walk(dir, None).ok()?.read_link(name).ok()
    }

    fn finish(&mut self) -> Result<(), UnpackError> {
        // A link checked when it was created may escape through a link
        // created after it: check every one again on the final tree.
        if self.opts.symlinks == Symlinks::Contained {
            for comps in std::mem::take(&mut self.symlinks) {
                let (name, parent) = comps.split_last().expect("links have a name");
                if let Some(target) = self.readlink_in_tree(parent, name) {
                    if self.root.link_escapes(parent, &target) {
                        return Err(refused(
                            &join(&comps),
                            Refusal::SymlinkEscapes {
                                target: lossy(&target),
                            },
                        ));
                    }
                }
            }
        }
        // Deepest first, so that a read-only directory gets its mode after
        // everything inside it is done.
        for (comps, mode, mtime) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let entry = join(&comps);
            let Ok(fd) = self.root.walk(&comps, None) else {
                continue;
            };
            fd.set_mode(mode).map_err(io_at(&entry))?;
            fd.set_own_mtime(&timespec(mtime)).map_err(io_at(&entry))?;
        }
        Ok(())
    }
}
