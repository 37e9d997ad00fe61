//! Zip archives (Python wheels) through the safe unpacker: each member of
//! the zip, read with the `zip` crate, is turned into a tar member on a
//! pipe that [`super::unpack`] reads, so a zip is held to exactly the rules
//! of a tar (no traversal, no duplicates, no writes through links), with
//! the same fd-relative writer. Zip adds its own refusals: symbolic links
//! and special files (a wheel holds regular files only), encrypted members
//! and backslashes in names (a Windows separator that would otherwise
//! become part of a file name).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use super::{UnpackError, UnpackOptions, UnpackReport};

/// Why a zip member was refused, or the zip could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("{path}: not a readable zip archive")]
    Archive {
        path: String,
        source: ::zip::result::ZipError,
    },
    #[error("zip member {entry:?} refused: {reason}")]
    Refused { entry: String, reason: &'static str },
    #[error("zip member {entry:?}")]
    Member {
        entry: String,
        source: ::zip::result::ZipError,
    },
    #[error("zip member {entry:?}: reading")]
    Read { entry: String, source: io::Error },
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("passing members to the unpacker")]
    Pipe(#[source] io::Error),
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// Unpacks the zip file at `path` into the existing directory `target`
/// under `opts` (the unpacker's rules for the tar stream it becomes).
pub fn unpack_zip(
    path: &Path,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, ZipError> {
    let file = File::open(path).map_err(|e| ZipError::Archive {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    let mut archive = ::zip::ZipArchive::new(file).map_err(|source| ZipError::Archive {
        path: path.display().to_string(),
        source,
    })?;
    // The zip crate keeps one member per name; a zip that names a path
    // twice (which member wins depends on the reader) is refused.
    if let Some(listed) = central_directory_entries(path) {
        if listed != archive.len() as u64 {
            return Err(ZipError::Refused {
                entry: path.display().to_string(),
                reason: "a duplicate entry: the archive names a path twice",
            });
        }
    }
    let (rd, wr) = nix::unistd::pipe().map_err(|e| ZipError::Pipe(e.into()))?;
    std::thread::scope(|s| {
        let writer = s.spawn(move || to_tar(&mut archive, wr));
        let unpacked = super::unpack(File::from(rd), target, opts);
        // A refusal on either side ends the other: the unpacker's error
        // closes the pipe (the writer then fails with EPIPE), the writer's
        // error ends the stream early (the unpacker then fails on it).
        let written = writer.join().expect("the zip reader does not panic");
        match (written, unpacked) {
            (
                Err(
                    e
                    @ (ZipError::Refused { .. } | ZipError::Member { .. } | ZipError::Read { .. }),
                ),
                _,
            ) => Err(e),
            (_, Err(e)) => Err(ZipError::Unpack(e)),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(report)) => Ok(report),
        }
    })
}

/// Writes every member of `archive` as a tar member to `out`, in the zip's
/// order; modes from the Unix attributes (0644 or 0755 by the executable
/// bit; directories 0755), mtime 0 (layers set their own).
fn to_tar(archive: &mut ::zip::ZipArchive<File>, out: OwnedFd) -> Result<(), ZipError> {
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, File::from(out)));
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|source| ZipError::Member {
            entry: format!("#{i}"),
            source,
        })?;
        let entry = String::from_utf8_lossy(member.name_raw()).into_owned();
        let refuse = |reason| ZipError::Refused {
            entry: entry.clone(),
            reason,
        };
        if member.encrypted() {
            return Err(refuse("encrypted members are not supported"));
        }
        if member.name_raw().contains(&b'\\') {
            return Err(refuse("its name contains a backslash"));
        }
        // The tar writer would stop at these before the unpacker sees them:
        // refused here with the unpacker's words.
        if member.name_raw().starts_with(b"/") {
            return Err(refuse("its path is absolute"));
        }
        if member.name_raw().split(|&b| b == b'/').any(|c| c == b"..") {
            return Err(refuse("its path contains `..`"));
        }
        let unix = member.unix_mode();
        let is_dir = member.is_dir();
        match unix.map(|m| m & S_IFMT) {
            None | Some(0) | Some(S_IFREG) if !is_dir => {}
            None | Some(0) | Some(S_IFDIR) if is_dir => {}
            _ => return Err(refuse("only regular files and directories may be unpacked")),
        }
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let name = member.name_raw().to_vec();
        let pipe_err = |e: io::Error| ZipError::Pipe(e);
        if is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, os_path(&name), io::empty())
                .map_err(pipe_err)?;
        } else {
            let exec = unix.is_some_and(|m| m & 0o111 != 0);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(member.size());
            let mut reader = Checked {
                inner: &mut member,
                entry: &entry,
                error: None,
            };
            let r = tar.append_data(&mut header, os_path(&name), &mut reader);
            if let Some(e) = reader.error.take() {
                return Err(e);
            }
            r.map_err(pipe_err)?;
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(ZipError::Pipe)
}

/// The number of entries the end-of-central-directory record of the zip at
/// `path` declares; None when it cannot tell (no record found, or a Zip64
/// archive, whose count lives elsewhere).
fn central_directory_entries(path: &Path) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.seek(SeekFrom::End(0)).ok()?;
    // The record is 22 bytes plus a comment of at most 65535.
    let tail = len.min(22 + 65535);
    f.seek(SeekFrom::Start(len - tail)).ok()?;
    let mut buf = Vec::with_capacity(tail as usize);
    f.read_to_end(&mut buf).ok()?;
    let at = (0..buf.len().checked_sub(22)? + 1)
        .rev()
        .find(|&i| buf[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])?;
    let total = u16::from_le_bytes([buf[at + 10], buf[at + 11]]);
    (total != 0xffff).then_some(u64::from(total))
}

fn os_path(name: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(name))
}

/// Keeps a read error of a member (a bad CRC, a truncated stream) apart
/// from a write error of the pipe, so that the report names the member.
struct Checked<'a, R> {
    inner: R,
    entry: &'a str,
    error: Option<ZipError>,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.error = Some(ZipError::Read {
                entry: self.entry.to_owned(),
                source: io::Error::new(e.kind(), e.to_string()),
            });
        })
    }
}
