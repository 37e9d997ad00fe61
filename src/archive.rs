//! Decompression of archives by their magic bytes: a `.tgz` that is really
//! xz, or a layer blob with no name at all, is read by what it is. Formats:
//! gzip (multi-member, as parallel gzip writes), bzip2, xz, zstd, and
//! uncompressed (tar).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

/// Longest magic number we look at.
const MAGIC_LEN: usize = 6;

/// The compression of a stream whose first bytes are `prefix`.
pub fn detect(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if prefix.starts_with(b"BZh") {
        Compression::Bzip2
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Whether a file name looks like an archive that recipes unpack by default
/// (docs/recipes.md: `.tar`, `.tar.gz`/`.tgz`, `.tar.bz2`, `.tar.xz`,
/// `.tar.zst`, and the short forms `.tbz2`, `.txz`, `.tzst`).
pub fn is_archive_name(name: &str) -> bool {
    const SUFFIXES: [&str; 11] = [
        ".tar",
        ".tar.gz",
        ".tgz",
        ".tar.bz2",
        ".tbz2",
        ".tbz",
        ".tar.xz",
        ".txz",
        ".tar.zst",
        ".tzst",
        ".tar.zstd",
    ];
    SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Wraps `r` in the decompressor its magic bytes call for.
pub fn decompress<'a, R: BufRead + Send + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let kind = detect(&peek(&mut r, MAGIC_LEN)?);
    let reader: Box<dyn Read + Send + 'a> = match kind {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    };
    Ok((kind, reader))
}

/// Opens the file at `path` and decompresses it by its magic bytes, with a
/// progress bar over the file's bytes (`unpacking NAME`), cleared when the
/// reader is dropped.
pub fn open(path: &Path) -> io::Result<(Compression, Box<dyn Read>)> {
    let f = File::open(path)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let bar = crate::progress::bar(
        &format!("unpacking {name}"),
        Some(f.metadata()?.len()),
        true,
    )
    .with_finish(indicatif::ProgressFinish::AndClear);
    let (kind, reader) = decompress(BufReader::with_capacity(128 * 1024, bar.wrap_read(f)))?;
    Ok(match kind {
        Compression::None => (kind, reader),
        _ => (kind, Box::new(ReadAhead::spawn(reader))),
    })
}

/// Bytes a [`ReadAhead`] thread decompresses per chunk, and how many
/// chunks it may be ahead.
const CHUNK: usize = 1 << 20;
const AHEAD: usize = 4;

/// A stream decompressed ahead by a thread of its own, as `tar -xJ` has its
/// `xz` process: unpacking a source is decoding plus one file creation per
/// member, and on ext4 the creations of binutils' 28,762 files cost about
/// as much as decoding its 26 MB of xz; one core each instead of one for
/// both. An empty chunk marks the end: a thread that stops without it (it
/// panicked) is an error, never a short stream.
struct ReadAhead {
    chunks: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl ReadAhead {
    fn spawn(mut inner: Box<dyn Read + Send>) -> ReadAhead {
        let (tx, chunks) = sync_channel(AHEAD);
        std::thread::spawn(move || loop {
            let mut chunk = vec![0; CHUNK];
            let got = loop {
                match inner.read(&mut chunk) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let last = !matches!(got, Ok(n) if n > 0);
            let sent = tx.send(got.map(|n| {
                chunk.truncate(n);
                chunk
            }));
            // Done, failed, or the reader was dropped.
            if last || sent.is_err() {
                return;
            }
        });
        ReadAhead {
            chunks,
            chunk: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    (self.chunk, self.at) = (chunk, 0);
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the decompressing thread stopped early"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Returns up to `n` leading bytes without consuming them. A `BufRead`'s
/// first fill may return fewer bytes than it could, so this only relies on
/// what one fill gives, which for files and sockets covers 6 bytes except at
/// the very end of a tiny stream.
fn peek<R: BufRead>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let buf = r.fill_buf()?;
    Ok(buf[..buf.len().min(n)].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn round_trip(kind: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match kind {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                // Two members, as deterministic parallel gzip writes them.
                for half in [&data[..data.len() / 2], &data[data.len() / 2..]] {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    e.write_all(half).unwrap();
                    out.extend(e.finish().unwrap());
                }
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), Default::default());
                e.write_all(data).unwrap();
                out = e.finish().unwrap();
            }
            Compression::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                out = e.finish().unwrap();
            }
            Compression::Zstd => out = zstd::encode_all(data, 3).unwrap(),
        }
        out
    }

    #[test]
    fn every_format_by_magic() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for kind in [
            Compression::None,
            Compression::Gzip,
            Compression::Bzip2,
            Compression::Xz,
            Compression::Zstd,
        ] {
            let packed = round_trip(kind, &data);
            let (got_kind, mut r) = decompress(&packed[..]).unwrap();
            assert_eq!(got_kind, kind);
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert!(back == data, "{kind} did not round-trip");
        }
    }

    #[test]
    fn files_are_decompressed_ahead_to_the_same_bytes_and_errors() {
        // Several chunks, and a last one that is not full.
        let data: Vec<u8> = (0..(3 * CHUNK as u32 + 12_345))
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        for kind in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
            let path = dir.path().join(format!("a.{kind}"));
            std::fs::write(&path, round_trip(kind, &data)).unwrap();
            let (got_kind, mut r) = open(&path).unwrap();
            assert_eq!(got_kind, kind);
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert!(back == data, "{kind} read ahead differs");
        }
        // Damage past the first chunk: an error from the reader, not a
        // stream that ends early.
        let mut bad = round_trip(Compression::Xz, &data);
        let at = bad.len() / 2;
        bad.truncate(at);
        let path = dir.path().join("cut.xz");
        std::fs::write(&path, bad).unwrap();
        let (_, mut r) = open(&path).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn archive_names() {
        assert!(is_archive_name("musl-1.2.5.tar.gz"));
        assert!(is_archive_name("x.tgz"));
        assert!(is_archive_name("x.tar.zst"));
        assert!(!is_archive_name("hex0-seed"));
        assert!(!is_archive_name("fix.patch"));
        assert!(!is_archive_name("x.deb"));
    }
}
