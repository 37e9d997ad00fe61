//! Reading Debian binary packages (`.deb`, deb(5)): an `ar` archive whose
//! members are `debian-binary` ("2.0\n"), `control.tar[.<ext>]` and
//! `data.tar[.<ext>]`, in that order; members whose name starts with `_` are
//! extensions that readers skip, as dpkg does.
//!
//! [`Deb::data`] streams the decompressed `data.tar`: nothing is buffered
//! whole, so a 50 MB compiler package costs no more memory than a small one.
//! Unpacking its entries is the job of the safe unpacker, not of this module.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The only format version this reader accepts (dpkg writes nothing else).
const FORMAT_VERSION: &[u8] = b"2.0\n";

/// How a `control.tar` or `data.tar` member is compressed, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The compression of member `name` if it is `<stem>.tar[.gz|.xz|.zst]`;
    /// `None` for any other name.
    fn of_member(name: &str, stem: &str) -> Option<Self> {
        match name.strip_prefix(stem)?.strip_prefix(".tar")? {
            "" => Some(Compression::None),
            ".gz" => Some(Compression::Gzip),
            ".xz" => Some(Compression::Xz),
            ".zst" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{}: cannot open: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("{}: not a Debian binary package: {error}", path.display())]
    Ar { path: PathBuf, error: io::Error },
    #[error("{}: not a Debian binary package: first member is {found:?}, expected \"debian-binary\"", path.display())]
    FirstMember { path: PathBuf, found: String },
    #[error("{}: member \"debian-binary\" holds {found:?}, expected \"2.0\\n\" (deb format 2.0)", path.display())]
    FormatVersion { path: PathBuf, found: String },
    #[error("{}: member {member:?} is not supported here: expected {expected}", path.display())]
    UnexpectedMember {
        path: PathBuf,
        member: String,
        expected: &'static str,
    },
    #[error("{}: no data.tar member (members: {})", path.display(), members.join(", "))]
    NoData { path: PathBuf, members: Vec<String> },
    #[error("{}: member {member:?}: {error}", path.display())]
    Member {
        path: PathBuf,
        member: String,
        error: io::Error,
    },
}

/// A `.deb` read from the start. `Seek` lets [`Deb::data`] pass over members
/// without reading them; the name given to [`Deb::new`] is what errors call it.
pub struct Deb<R: Read + Seek> {
    path: PathBuf,
    archive: ar::Archive<R>,
}

impl Deb<BufReader<File>> {
    /// Opens the .deb at `path`; errors name it.
    pub fn open(path: &Path) -> Result<Self, DebError> {
        let file = File::open(path).map_err(|source| DebError::Open {
            path: path.to_owned(),
            error: source,
        })?;
        Ok(Deb::new(BufReader::new(file), path))
    }
}

impl<R: Read + Seek> Deb<R> {
    pub fn new(reader: R, name: impl Into<PathBuf>) -> Self {
        Deb {
            path: name.into(),
            archive: ar::Archive::new(reader),
        }
    }

    /// Checks the format version, passes over `control.tar`, and returns the
    /// decompressed `data.tar` stream. Read errors inside it (corrupt or
    /// truncated compressed data) name the package and the member.
    pub fn data(&mut self) -> Result<DataTar<'_>, DebError> {
        let path = self.path.clone();
        let ar_error = |source| DebError::Ar {
            path: path.clone(),
            error: source,
        };
        let mut seen = Vec::new();
        let mut control_seen = false;
        let (index, member, compression, size) = loop {
            let Some(entry) = self.archive.next_entry() else {
                return Err(DebError::NoData {
                    path,
                    members: seen,
                });
            };
            let mut entry = entry.map_err(ar_error)?;
            let member = member_name(entry.header().identifier());
            let size = entry.header().size();
            if seen.is_empty() {
                if member != "debian-binary" {
                    return Err(DebError::FirstMember {
                        path,
                        found: member,
                    });
                }
                check_format_version(&mut entry, &path)?;
            } else if member.starts_with('_') {
                // An extension member (dpkg skips these too).
            } else if !control_seen {
                if Compression::of_member(&member, "control").is_none() {
                    return Err(DebError::UnexpectedMember {
                        path,
                        member,
                        expected: "control.tar, control.tar.gz, control.tar.xz or control.tar.zst",
                    });
                }
                control_seen = true;
            } else {
                let Some(compression) = Compression::of_member(&member, "data") else {
                    return Err(DebError::UnexpectedMember {
                        path,
                        member,
                        expected: "data.tar, data.tar.gz, data.tar.xz or data.tar.zst",
                    });
                };
                // Seek past the member so that dropping the entry does not
                // read it through; `jump_to_entry` comes back to its start.
                entry.seek(SeekFrom::End(0)).map_err(ar_error)?;
                break (seen.len(), member, compression, size);
            }
            seen.push(member);
        };
        let entry = self.archive.jump_to_entry(index).map_err(ar_error)?;
        let raw = ExactMember {
            inner: entry,
            remaining: size,
        };
        let inner = decompressor(compression, raw).map_err(|source| DebError::Member {
            path: path.clone(),
            member: member.clone(),
            error: source,
        })?;
        Ok(DataTar {
            path,
            member,
            compression,
            inner,
        })
    }
}

/// The decompressed `data.tar` of a `.deb`, as a byte stream.
pub struct DataTar<'a> {
    path: PathBuf,
    member: String,
    compression: Compression,
    inner: Box<dyn Read + 'a>,
}

impl DataTar<'_> {
    /// The member's name as stored, e.g. `data.tar.xz`.
    pub fn member(&self) -> &str {
        &self.member
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }
}

impl Read for DataTar<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: member {:?}: {e}", self.path.display(), self.member),
            )
        })
    }
}

/// Member names are space-padded in the common format and may end in `/` in
/// the GNU one.
fn member_name(identifier: &[u8]) -> String {
    let name = String::from_utf8_lossy(identifier);
    let name = name.trim_end_matches(' ');
    name.strip_suffix('/').unwrap_or(name).to_owned()
}

fn check_format_version(entry: &mut impl Read, path: &Path) -> Result<(), DebError> {
    let mut found = Vec::new();
    // Anything longer than a few bytes is wrong; don't read a huge member.
    entry
        .take(64)
        .read_to_end(&mut found)
        .map_err(|source| DebError::Member {
            path: path.to_owned(),
            member: "debian-binary".to_owned(),
            error: source,
        })?;
    if found != FORMAT_VERSION {
        return Err(DebError::FormatVersion {
            path: path.to_owned(),
            found: String::from_utf8_lossy(&found).into_owned(),
        });
    }
    Ok(())
}

fn decompressor<'a>(
    compression: Compression,
    raw: impl Read + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(raw)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(raw)?;
            // dpkg may write long-distance-matching frames (zstd --long).
            decoder.window_log_max(31)?;
            Box::new(decoder)
        }
    })
}

/// An ar member that must deliver exactly its declared size: the `ar` crate
/// reports a truncated file as a short member, which a decompressor or tar
/// reader might take for a clean end.
struct ExactMember<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactMember<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.remaining == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated: {} bytes missing", self.remaining),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ar archive with the given members, written by the `ar` crate.
    fn ar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = ar::Builder::new(Vec::new());
        for (name, data) in members {
            let header = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut enc, data).unwrap();
        enc.finish().unwrap()
    }

    fn tar_with(path: &str, contents: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, contents).unwrap();
        builder.into_inner().unwrap()
    }

    fn data_of(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut deb = Deb::new(io::Cursor::new(bytes), "pkg_1.0_amd64.deb");
        let mut data = deb.data().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        data.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn reads_each_supported_compression() {
        let tar = tar_with("usr/bin/hello", b"hi\n");
        let xz = {
            let mut out = Vec::new();
            xz2::read::XzEncoder::new(&tar[..], 6)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (member, data) in [
            ("data.tar", tar.clone()),
            ("data.tar.gz", gzip(&tar)),
            ("data.tar.xz", xz),
            ("data.tar.zst", zst),
        ] {
            let deb = ar_of(&[
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", &gzip(b"")),
                ("_extension", b"ignored"),
                (member, &data),
            ]);
            assert_eq!(data_of(deb).unwrap(), tar, "member {member}");
        }
    }

    #[test]
    fn rejects_a_non_ar_file() {
        let err = data_of(b"#!/bin/sh\necho not a deb\n".to_vec()).unwrap_err();
        assert!(
            err.starts_with("pkg_1.0_amd64.deb: not a Debian binary package"),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_wrong_first_member() {
        let deb = ar_of(&[("control.tar.gz", b""), ("debian-binary", b"2.0\n")]);
        let err = data_of(deb).unwrap_err();
        assert!(err.contains("first member is \"control.tar.gz\""), "{err}");
    }

    #[test]
    fn rejects_another_format_version() {
        let deb = ar_of(&[("debian-binary", b"3.0\n"), ("control.tar", b"")]);
        let err = data_of(deb).unwrap_err();
        assert!(
            err.contains("holds \"3.0\\n\", expected \"2.0\\n\""),
            "{err}"
        );
    }

    #[test]
    fn names_an_unsupported_data_compression() {
        let deb = ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b""),
            ("data.tar.bz2", b"BZh9"),
        ]);
        let err = data_of(deb).unwrap_err();
        assert_eq!(
            err,
            "pkg_1.0_amd64.deb: member \"data.tar.bz2\" is not supported here: \
             expected data.tar, data.tar.gz, data.tar.xz or data.tar.zst"
        );
    }

    #[test]
    fn rejects_a_member_before_control() {
        let deb = ar_of(&[("debian-binary", b"2.0\n"), ("data.tar", b"")]);
        let err = data_of(deb).unwrap_err();
        assert!(
            err.contains("member \"data.tar\" is not supported here: expected control.tar"),
            "{err}"
        );
    }

    #[test]
    fn reports_a_missing_data_member() {
        let deb = ar_of(&[("debian-binary", b"2.0\n"), ("control.tar.gz", &gzip(b""))]);
        let err = data_of(deb).unwrap_err();
        assert_eq!(
            err,
            "pkg_1.0_amd64.deb: no data.tar member (members: debian-binary, control.tar.gz)"
        );
    }

    #[test]
    fn reports_truncated_and_corrupt_data_with_the_member() {
        let tar = tar_with("a", &[7u8; 4096]);
        let gz = gzip(&tar);
        let deb = ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", b""),
            ("data.tar.gz", &gz),
        ]);
        let truncated = deb[..deb.len() - gz.len() / 2].to_vec();
        let err = data_of(truncated).unwrap_err();
        assert!(
            err.starts_with("pkg_1.0_amd64.deb: member \"data.tar.gz\": "),
            "{err}"
        );

        let mut corrupt = deb.clone();
        let at = deb.len() - gz.len() + 20;
        corrupt[at] ^= 0xff;
        let err = data_of(corrupt).unwrap_err();
        assert!(
            err.starts_with("pkg_1.0_amd64.deb: member \"data.tar.gz\": "),
            "{err}"
        );
    }

    #[test]
    fn member_names_lose_padding_and_gnu_slash() {
        assert_eq!(member_name(b"data.tar.xz/"), "data.tar.xz");
        assert_eq!(member_name(b"debian-binary   "), "debian-binary");
    }
}
