//! Nix's NAR serialisation of a file-system tree and its sha256, written as
//! SRI (`sha256-<base64>`), so that `tree` pins from nixpkgs carry over.
//!
//! The format (Eelco Dolstra's thesis, section 5.2.1): every string is its
//! length as a little-endian u64, its bytes, and zero padding to a multiple
//! of 8. A node is `( type regular [executable ""] contents <data> )`,
//! `( type symlink target <target> )` or `( type directory entry ( name <n>
//! node <node> ) ... )` with entries sorted by name bytes. Only the owner's
//! execute bit counts; owners, times and other mode bits are not recorded.
//!
//! Streaming: file contents pass through a fixed buffer, so memory does not
//! depend on file sizes (only on one directory's entry names at a time).

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The sha256 of a tree's NAR serialisation. Displayed and parsed as SRI.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed tree hash {input:?}: expected `sha256-` followed by 44 characters of base64 (SRI, as `nix hash path --sri` prints)")]
pub struct NarHashParseError {
    pub input: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NarError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: unsupported file type (only regular files, directories and symbolic links have a NAR form)")]
    Unsupported { path: PathBuf },
    #[error("{path}: file changed size while being hashed (expected {expected} bytes)")]
    Changed { path: PathBuf, expected: u64 },
}

impl NarHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NarHash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits: a file-name-safe form (base64 has `/`).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for NarHash {
    type Err = NarHashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NarHashParseError {
            input: s.to_owned(),
        };
        let b64 = s.strip_prefix("sha256-").ok_or_else(err)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| err())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        Ok(NarHash(arr))
    }
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.0);
        write!(f, "sha256-{b64}")
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for NarHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NarHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The NAR hash of the tree (or single file, or symlink) at `path`.
pub fn hash_path(path: &Path) -> Result<NarHash, NarError> {
    let mut w = HashWriter(Sha256::new());
    write_nar(path, &mut w)?;
    Ok(NarHash(w.0.finalize().into()))
}

/// Writes the NAR serialisation of `path` to `out`.
pub fn write_nar<W: Write>(path: &Path, out: W) -> Result<(), NarError> {
    let mut enc = Encoder {
        out,
        buf: vec![0; 64 * 1024],
    };
    let io = |source| NarError::Io {
        path: path.to_owned(),
        error: source,
    };
    enc.str(b"nix-archive-1").map_err(io)?;
    enc.node(path)
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Encoder<W> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    fn str(&mut self, s: &[u8]) -> io::Result<()> {
        self.out.write_all(&(s.len() as u64).to_le_bytes())?;
        self.out.write_all(s)?;
        self.pad(s.len() as u64)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let n = (8 - (len % 8) as usize) % 8;
        self.out.write_all(&[0u8; 8][..n])
    }

    fn node(&mut self, path: &Path) -> Result<(), NarError> {
        let io = |source| NarError::Io {
            path: path.to_owned(),
            error: source,
        };
        let meta = fs::symlink_metadata(path).map_err(io)?;
        let ft = meta.file_type();
        self.str(b"(").map_err(io)?;
        self.str(b"type").map_err(io)?;
        if ft.is_file() {
            self.str(b"regular").map_err(io)?;
            if meta.permissions().mode() & 0o100 != 0 {
                self.str(b"executable").map_err(io)?;
                self.str(b"").map_err(io)?;
            }
            self.str(b"contents").map_err(io)?;
            self.contents(path, meta.len())?;
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io)?;
            self.str(b"symlink").map_err(io)?;
            self.str(b"target").map_err(io)?;
            self.str(target.as_os_str().as_bytes()).map_err(io)?;
        } else if ft.is_dir() {
            self.str(b"directory").map_err(io)?;
            let mut names: Vec<OsString> = fs::read_dir(path)
                .map_err(io)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io)?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                self.str(b"entry").map_err(io)?;
                self.str(b"(").map_err(io)?;
                self.str(b"name").map_err(io)?;
                self.str(name.as_bytes()).map_err(io)?;
                self.str(b"node").map_err(io)?;
                self.node(&path.join(&name))?;
                self.str(b")").map_err(io)?;
            }
        } else {
            return Err(NarError::Unsupported {
                path: path.to_owned(),
            });
        }
        self.str(b")").map_err(io)
    }

    fn contents(&mut self, path: &Path, len: u64) -> Result<(), NarError> {
        let io = |source| NarError::Io {
            path: path.to_owned(),
            error: source,
        };
        let changed = || NarError::Changed {
            path: path.to_owned(),
            expected: len,
        };
        self.out.write_all(&len.to_le_bytes()).map_err(io)?;
        let mut file = File::open(path).map_err(io)?;
        let mut left = len;
        while left > 0 {
            let want = self.buf.len().min(left as usize);
            let n = file.read(&mut self.buf[..want]).map_err(io)?;
            if n == 0 {
                return Err(changed());
            }
            self.out.write_all(&self.buf[..n]).map_err(io)?;
            left -= n as u64;
        }
        if file.read(&mut self.buf[..1]).map_err(io)? != 0 {
            return Err(changed());
        }
        self.pad(len).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds the NAR of a small tree by hand from the format's definition
    /// and checks both the bytes and the hash.
    #[test]
    fn hand_built_vector() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("b"), b"hello\n").unwrap();
        fs::write(root.join("a.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("a.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("b", root.join("l")).unwrap();

        fn s(out: &mut Vec<u8>, x: &[u8]) {
            out.extend_from_slice(&(x.len() as u64).to_le_bytes());
            out.extend_from_slice(x);
            out.resize(out.len().div_ceil(8) * 8, 0);
        }
        let mut want = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"type", b"directory"] {
            s(&mut want, t);
        }
        for t in [&b"entry"[..], b"(", b"name", b"a.sh", b"node", b"("] {
            s(&mut want, t);
        }
        for t in [&b"type"[..], b"regular", b"executable", b"", b"contents"] {
            s(&mut want, t);
        }
        s(&mut want, b"#!/bin/sh\n");
        for t in [
            &b")"[..],
            b")",
            b"entry",
            b"(",
            b"name",
            b"b",
            b"node",
            b"(",
        ] {
            s(&mut want, t);
        }
        for t in [
            &b"type"[..],
            b"regular",
            b"contents",
            b"hello\n",
            b")",
            b")",
        ] {
            s(&mut want, t);
        }
        for t in [&b"entry"[..], b"(", b"name", b"l", b"node", b"("] {
            s(&mut want, t);
        }
        for t in [&b"type"[..], b"symlink", b"target", b"b", b")", b")", b")"] {
            s(&mut want, t);
        }

        let mut got = Vec::new();
        write_nar(&root, &mut got).unwrap();
        assert_eq!(got, want);
        let h = hash_path(&root).unwrap();
        assert_eq!(h.as_bytes(), &<[u8; 32]>::from(Sha256::digest(&want)));
        // The empty regular file: a well-known Nix constant
        // (`nix hash path` of an empty file, measured with nix 2.8).
        fs::write(root.join("empty"), b"").unwrap();
        assert_eq!(
            hash_path(&root.join("empty")).unwrap().to_string(),
            "sha256-d6xi4mKdjkX2JFicDIv5niSzpyI0m/Hnm8GGAIU04kY="
        );
    }

    #[test]
    fn sri_round_trip_and_errors() {
        let h = NarHash::from_bytes([7; 32]);
        assert_eq!(h.to_string().parse::<NarHash>().unwrap(), h);
        for bad in ["sha256:abc", "sha256-", "sha512-AAAA", "sha256-AAAA"] {
            assert!(bad.parse::<NarHash>().is_err(), "{bad}");
        }
    }
}
