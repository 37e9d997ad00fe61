//! Reading a seed tarball: unpack it with the safe unpacker into an empty
//! directory, then accept it only if all of it holds. Checked, in order:
//! the gzip stream (imgrep's fixed header, deflate data, CRC and length;
//! nothing after it), the tar
//! stream (every header, the end-of-archive marker), `index.json` against
//! `index.json.sha256`, the index's type and canonical form, and every
//! member on disk against the index (same paths, kinds, sizes, sha256,
//! executable bits, link targets; nothing missing, nothing extra). What is
//! verified is what was unpacked, so nothing can change between the check
//! and the use.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::index::{self, Index};
use super::{SeedError, INDEX, INDEX_SHA256, INDEX_TYPE, SOURCES_DIR, TREES_DIR};
use crate::digest::Digest;
use crate::unpack::{self, UnpackOptions};

/// A verified, unpacked seed tarball.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Where it was unpacked: a recipe tree (packages/, stage0/, seeds/,
    /// manifests/) with the sources beside it.
    pub root: PathBuf,
    pub index: Index,
    /// sha256 of the tarball file.
    pub digest: Digest,
    pub size: u64,
}

impl Opened {
    /// The local source directories that hold the tarball's sources, in the
    /// layout the fetcher reads (docs/fetch.md).
    pub fn source_dirs(&self) -> Vec<PathBuf> {
        vec![self.root.join(SOURCES_DIR), self.root.join(TREES_DIR)]
    }
}

/// Verifies `file` completely while unpacking it into `dest` (an existing,
/// empty directory). On any error `dest` holds garbage the caller removes.
pub fn open(file: &Path, dest: &Path) -> Result<Opened, SeedError> {
    let corrupt = |reason: String| SeedError::Corrupt {
        file: file.to_owned(),
        reason,
    };
    let f = File::open(file).map_err(SeedError::io(file, "opening the seed tarball"))?;
    let len = f
        .metadata()
        .map_err(SeedError::io(file, "opening the seed tarball"))?
        .len();
    let bar = crate::progress::bar("verifying and unpacking the seed", Some(len), true)
        .with_finish(indicatif::ProgressFinish::AndClear);
    let mut hashed = BufReader::with_capacity(256 * 1024, Hashed::new(bar.wrap_read(f)));
    let expected = gzip_header();
    let head = hashed.fill_buf().map_err(SeedError::io(file, "reading"))?;
    if !head.starts_with(&expected) {
        return Err(corrupt(format!(
            "its gzip header is not the one imgrep's pinned compressor writes ({})",
            hex::encode(expected)
        )));
    }
    let mut gz = Tail::new(flate2::bufread::GzDecoder::new(hashed));
    unpack::unpack(&mut gz, dest, &UnpackOptions::SOURCE)
        .map_err(|e| corrupt(format!("unpacking: {e}")))?;
    if !gz.ends_with_end_marker() {
        return Err(corrupt(
            "the tar stream has no end-of-archive marker (two zero blocks): it is truncated".into(),
        ));
    }
    let mut rest = gz.inner.into_inner();
    let trailing = rest
        .fill_buf()
        .map_err(SeedError::io(file, "reading"))?
        .len();
    if trailing != 0 {
        return Err(corrupt(
            "bytes follow the end of the gzip stream (not a tarball imgrep wrote)".into(),
        ));
    }
    let (digest, size) = rest.into_inner().finish();

    let index = read_index(dest).map_err(corrupt)?;
    let found = index::scan(dest)?;
    let diffs = index::differences(&index.members, &found);
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(10).map(String::as_str).collect();
        let more = match diffs.len() - shown.len() {
            0 => String::new(),
            n => format!("\n  ... and {n} more"),
        };
        return Err(corrupt(format!(
            "{} member(s) differ from index.json:\n  {}{more}",
            diffs.len(),
            shown.join("\n  ")
        )));
    }
    index::restore_times(dest, &index.members)?;
    Ok(Opened {
        root: dest.to_owned(),
        index,
        digest,
        size,
    })
}

/// The fixed header of imgrep's gzip streams (docs/layers.md): a flag or
/// byte changed there alters no content, but it is still not the tarball
/// that was published.
fn gzip_header() -> Vec<u8> {
    let encoder = crate::compress::Encoder::new(crate::layer::Compression::Gzip, 1, Vec::new())
        .and_then(crate::compress::Encoder::finish)
        .expect("compressing nothing into memory cannot fail");
    encoder[..10].to_vec()
}

/// Reads `index.json`, checked against `index.json.sha256`, its type and its
/// canonical form.
fn read_index(dir: &Path) -> Result<Index, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| format!("{name}: {e} (every seed tarball has one)"))
    };
    let sum = read(INDEX_SHA256)?;
    let bytes = read(INDEX)?;
    let listed = std::str::from_utf8(&sum)
        .ok()
        .and_then(|s| s.strip_suffix(&format!("  {INDEX}\n")))
        .and_then(|hex| Digest::from_hex(hex).ok())
        .ok_or_else(|| format!("{INDEX_SHA256}: expected `<64 hex>  {INDEX}` and a newline"))?;
    let got = Digest::of(&bytes);
    if got != listed {
        return Err(format!(
            "{INDEX}: its sha256 is {}, but {INDEX_SHA256} says {}",
            got.hex(),
            listed.hex()
        ));
    }
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|e| format!("{INDEX}: not a seed index: {e}"))?;
    if index.kind != INDEX_TYPE {
        return Err(format!(
            "{INDEX}: type {:?}, expected {INDEX_TYPE:?} (written by another imgrep version?)",
            index.kind
        ));
    }
    if crate::canonical::to_vec(&index).ok().as_deref() != Some(&bytes[..]) {
        return Err(format!(
            "{INDEX}: not in canonical form (sorted keys, no whitespace)"
        ));
    }
    Ok(index)
}

/// Hashes and counts the bytes read from the file.
struct Hashed<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Hashed<R> {
    fn new(inner: R) -> Self {
        Hashed {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Reads what is left, then returns the digest and length of everything.
    fn finish(mut self) -> (Digest, u64) {
        let _ = io::copy(&mut self.inner, &mut io::sink());
        (Digest::from_bytes(self.hasher.finalize().into()), self.len)
    }
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Keeps the last 1024 bytes of the uncompressed stream.
struct Tail<R> {
    inner: R,
    tail: Vec<u8>,
}

const END_MARKER: usize = 1024;

impl<R: Read> Tail<R> {
    fn new(inner: R) -> Self {
        Tail {
            inner,
            tail: Vec::with_capacity(2 * END_MARKER),
        }
    }

    fn ends_with_end_marker(&self) -> bool {
        self.tail.len() == END_MARKER && self.tail.iter().all(|&b| b == 0)
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        if got.len() >= END_MARKER {
            self.tail.clear();
            self.tail.extend_from_slice(&got[got.len() - END_MARKER..]);
        } else {
            self.tail.extend_from_slice(got);
            let excess = self.tail.len().saturating_sub(END_MARKER);
            self.tail.drain(..excess);
        }
        Ok(n)
    }
}
