//! Packing a directory into a normalised, deterministic tar layer
//! (DESIGN.md section 4; every rule is written down in docs/layers.md).
//!
//! The tree is walked one directory level at a time with each level sorted,
//! so memory depends on the widest directory, not the size of the tree. The
//! tar stream is hashed (diff_id), compressed and hashed again (blob digest)
//! in the same pass, the hashing on threads of its own (module `pipe`).

mod pipe;
mod tar;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use crate::compress::Compression;
use crate::compress::Encoder;
use crate::digest::Digest;
use pipe::HashStage;
use tar::{Header, Kind};

/// Version of the layer byte format: the normalisation rules, the tar
/// encoding and the pinned compressors. Part of every input digest; any change
/// to the bytes a tree packs to must bump it. History in docs/layers.md.
pub const FORMAT_VERSION: u32 = 4;

/// Bits a caller may declare per path: setuid, setgid, sticky.
pub const SPECIAL_BITS: u32 = 0o7000;

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// mtime of every entry (seconds since the epoch, 0..=8^11-1).
    pub source_date_epoch: i64,
    pub compression: Compression,
    /// Compression workers; never changes the bytes.
    pub threads: usize,
    /// Setuid/setgid/sticky bits (subsets of [`SPECIAL_BITS`]) by relative
    /// path (`usr/bin/su`); every other entry carries none.
    pub special_modes: BTreeMap<String, u32>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            source_date_epoch: crate::DEFAULT_SOURCE_DATE_EPOCH,
            compression: Compression::Gzip,
            threads: 1,
            special_modes: BTreeMap::new(),
        }
    }
}

/// What a packed layer is, as an image config and manifest reference it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar stream: the layer's identity.
    pub diff_id: Digest,
    /// sha256 of the blob as written (compressed).
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    pub media_type: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("{}: {kind} cannot be stored in a layer (only files, directories and symlinks)", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{}: {what} changed while it was being packed", path.display())]
    Changed { path: PathBuf, what: &'static str },
    #[error("special mode for {path:?}: {mode:#o} has bits outside setuid/setgid/sticky (0o7000)")]
    BadSpecialMode { path: String, mode: u32 },
    #[error("special mode declared for {path:?}, which is {reason}")]
    SpecialModeTarget { path: String, reason: &'static str },
    #[error("SOURCE_DATE_EPOCH {0} is outside 0..=8589934591, the range of a ustar mtime")]
    EpochOutOfRange(i64),
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("writing the layer: {0}")]
    Write(io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Packs `dir` as one layer into `out`, returning its digests and size.
/// `dir` itself is not an entry; its contents are, relative to it.
pub fn pack<W: Write + Send>(dir: &Path, opts: &PackOptions, out: W) -> Result<LayerInfo> {
    let mtime = u64::try_from(opts.source_date_epoch)
        .ok()
        .filter(|&t| t <= tar::MAX_OCTAL_11)
        .ok_or(Error::EpochOutOfRange(opts.source_date_epoch))?;
    for (path, &mode) in &opts.special_modes {
        if mode & !SPECIAL_BITS != 0 {
            return Err(Error::BadSpecialMode {
                path: path.clone(),
                mode,
            });
        }
    }
    let meta = fs::metadata(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        error: source,
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(dir.to_owned()));
    }

    let (diff_id, digest, size) = std::thread::scope(|scope| {
        let blob = HashStage::spawn(scope, out);
        let encoder = Encoder::new(opts.compression, opts.threads, blob).map_err(Error::Write)?;
        let mut packer = Packer {
            out: HashStage::spawn(scope, encoder),
            mtime,
            special: &opts.special_modes,
            special_used: BTreeSet::new(),
            links: HashMap::new(),
        };
        packer.dir(dir, &mut Vec::new())?;
        if let Some(missing) = opts
            .special_modes
            .keys()
            .find(|p| !packer.special_used.contains(p.as_str()))
        {
            return Err(Error::SpecialModeTarget {
                path: missing.clone(),
                reason: "not in the tree",
            });
        }
        tar::write_end(&mut packer.out).map_err(Error::Write)?;
        let (encoder, diff_id, _) = packer.out.finish().map_err(Error::Write)?;
        let blob = encoder.finish().map_err(Error::Write)?;
        let (mut out, digest, size) = blob.finish().map_err(Error::Write)?;
        out.flush().map_err(Error::Write)?;
        Ok((diff_id, digest, size))
    })?;
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        media_type: opts.compression.layer_media_type(),
    })
}

/// Packs `dir` into `blob_dir/<hex of the blob digest>` atomically: a
/// temporary file in `blob_dir`, fsynced, renamed, the directory fsynced. An
/// interrupted pack leaves only a `.tmp-*` file, never a blob under a digest.
pub fn pack_to_blob_dir(dir: &Path, opts: &PackOptions, blob_dir: &Path) -> Result<LayerInfo> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            path,
            error: source,
        }
    };
    fs::create_dir_all(blob_dir).map_err(io_err(blob_dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(blob_dir)
        .map_err(io_err(blob_dir))?;
    let mut out = crate::fsutil::SyncBehind::new(tmp.as_file());
    let info = pack(dir, opts, &mut out)?;
    out.finish().map_err(io_err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    let dest = blob_dir.join(info.digest.hex());
    tmp.persist(&dest).map_err(|e| Error::Io {
        path: dest.clone(),
        error: e.error,
    })?;
    crate::fsutil::sync_dir(blob_dir).map_err(io_err(blob_dir))?;
    Ok(info)
}

struct Packer<'a, 'scope, W: Write + Send> {
    out: HashStage<'scope, W>,
    mtime: u64,
    special: &'a BTreeMap<String, u32>,
    special_used: BTreeSet<&'a str>,
    /// First archive path, and its mode, of every multiply-linked inode seen so far.
    links: HashMap<(u64, u64), (Vec<u8>, u32)>,
}

struct Child {
    /// Sort key and archive name component: the name, plus `/` for directories,
    /// so sibling order equals byte-wise order of full archive paths.
    key: Vec<u8>,
    path: PathBuf,
    meta: Metadata,
}

impl<'scope, W: Write + Send + 'scope> Packer<'_, 'scope, W> {
    /// Emits the entries below `dir`, whose archive path (with trailing `/`,
    /// empty for the root) is `prefix`.
    fn dir(&mut self, dir: &Path, prefix: &mut Vec<u8>) -> Result<()> {
        let io_err = |source| Error::Io {
            path: dir.to_owned(),
            error: source,
        };
        let mut children = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|source| Error::Io {
                path: path.clone(),
                error: source,
            })?;
            let mut key = entry.file_name().as_bytes().to_vec();
            if meta.is_dir() {
                key.push(b'/');
            }
            children.push(Child { key, path, meta });
        }
        children.sort_unstable_by(|a, b| a.key.cmp(&b.key));

        for child in children {
            let len = prefix.len();
            prefix.extend_from_slice(&child.key);
            self.entry(&child, prefix)?;
            if child.meta.is_dir() {
                self.dir(&child.path, prefix)?;
            }
            prefix.truncate(len);
        }
        Ok(())
    }

    fn entry(&mut self, child: &Child, name: &[u8]) -> Result<()> {
        let path = &child.path;
        let meta = &child.meta;
        let ft = meta.file_type();
        let unsupported = |kind| {
            Err(Error::Unsupported {
                path: path.clone(),
                kind,
            })
        };
        let (kind, base_mode) = if ft.is_dir() {
            (Kind::Dir, 0o755)
        } else if ft.is_symlink() {
            (Kind::Symlink, 0o777)
        } else if ft.is_file() {
            let exec = meta.mode() & 0o100 != 0;
            (Kind::File, if exec { 0o755 } else { 0o644 })
        } else if ft.is_block_device() {
            return unsupported("block device");
        } else if ft.is_char_device() {
            return unsupported("character device");
        } else if ft.is_fifo() {
            return unsupported("fifo");
        } else if ft.is_socket() {
            return unsupported("socket");
        } else {
            return unsupported("file of unknown type");
        };
        let inode = (meta.dev(), meta.ino());
        if kind != Kind::Dir && meta.nlink() > 1 {
            if let Some((first, mode)) = self.links.get(&inode).cloned() {
                if self.special_bits(name, kind)? != 0 {
                    return Err(Error::SpecialModeTarget {
                        path: String::from_utf8_lossy(name).into_owned(),
                        reason: "a hard link: declare the mode on the path it links to",
                    });
                }
                // A hard link carries the mode of the entry it names.
                return self.write_header(&Header {
                    path: name,
                    kind: Kind::HardLink,
                    mode,
                    size: 0,
                    mtime: self.mtime,
                    link: &first,
                });
            }
        }
        let mode = base_mode | self.special_bits(name, kind)?;
        if kind != Kind::Dir && meta.nlink() > 1 {
            self.links.insert(inode, (name.to_vec(), mode));
        }

        let target;
        let mut header = Header {
            path: name,
            kind,
            mode,
            size: 0,
            mtime: self.mtime,
            link: &[],
        };
        match kind {
            Kind::Symlink => {
                target = fs::read_link(path)
                    .map_err(|source| Error::Io {
                        path: path.clone(),
                        error: source,
                    })?
                    .into_os_string()
                    .into_vec();
                header.link = &target;
                self.write_header(&header)
            }
            Kind::File => {
                header.size = meta.len();
                self.write_header(&header)?;
                self.copy_file(path, meta.len())
            }
            Kind::Dir | Kind::HardLink => self.write_header(&header),
        }
    }

    /// The declared special bits of `name` (archive path), checking the
    /// declaration makes sense for the entry's kind.
    fn special_bits(&mut self, name: &[u8], kind: Kind) -> Result<u32> {
        let key = name.strip_suffix(b"/").unwrap_or(name);
        let Ok(key) = std::str::from_utf8(key) else {
            return Ok(0);
        };
        let Some((declared, &bits)) = self.special.get_key_value(key) else {
            return Ok(0);
        };
        if kind == Kind::Symlink {
            return Err(Error::SpecialModeTarget {
                path: declared.clone(),
                reason: "a symbolic link",
            });
        }
        self.special_used.insert(declared.as_str());
        Ok(bits)
    }

    fn write_header(&mut self, h: &Header<'_>) -> Result<()> {
        tar::write_header(&mut self.out, h).map_err(Error::Write)
    }

    fn copy_file(&mut self, path: &Path, size: u64) -> Result<()> {
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            error: source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let mut left = size;
        while left > 0 {
            let spare = self.out.spare();
            let want = spare.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file.read(&mut spare[..want]).map_err(io_err)?;
            if n == 0 {
                return Err(Error::Changed {
                    path: path.to_owned(),
                    what: "size (file shrank)",
                });
            }
            self.out.commit(n).map_err(Error::Write)?;
            left -= n as u64;
        }
        if file.read(&mut [0]).map_err(io_err)? != 0 {
            return Err(Error::Changed {
                path: path.to_owned(),
                what: "size (file grew)",
            });
        }
        tar::write_padding(&mut self.out, size).map_err(Error::Write)
    }
}
