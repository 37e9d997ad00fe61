//! A lookaside signature store, as containers/image reads one through a
//! `lookaside: file:///DIR` entry of registries.d (containers-registries.d(5),
//! containers/image's docs/signature-protocols.md): the signatures of image
//! manifest `sha256:HEX` in repository `NAME` (the path without the
//! registry host) are `DIR/NAME@sha256=HEX/signature-1`, `signature-2`, ...
//! with no gap; podman reads them in order until one is missing.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
#[error("writing a signature into the lookaside store {}", path.display())]
pub struct LookasideError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Where a signature was stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub path: PathBuf,
    /// The same bytes were already there (signing again changes nothing).
    pub existed: bool,
}

/// The directory holding the signatures of `manifest` in repository `name`
/// (already checked by the reference grammar: no `.` or `..` components).
pub fn signature_dir(root: &Path, name: &str, manifest: &Digest) -> PathBuf {
    root.join(format!("{name}@sha256={}", manifest.hex()))
}

/// Adds `signature` as the next `signature-N` of `manifest`, unless the
/// same bytes are already one of them. Each file appears whole (written
/// beside it, then linked without replacing), so two signers adding at
/// once both land.
pub fn store(
    root: &Path,
    name: &str,
    manifest: &Digest,
    signature: &[u8],
) -> Result<Stored, LookasideError> {
    let dir = signature_dir(root, name, manifest);
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| LookasideError { path, source }
    };
    fs::create_dir_all(&dir).map_err(err(&dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(err(&dir))?;
    tmp.write_all(signature).map_err(err(tmp.path()))?;
    let mut n = 1;
    loop {
        let path = dir.join(format!("signature-{n}"));
        match fs::read(&path) {
            Ok(bytes) if bytes == signature => {
                return Ok(Stored {
                    path,
                    existed: true,
                })
            }
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match tmp.persist_noclobber(&path) {
                    Ok(_) => {
                        return Ok(Stored {
                            path,
                            existed: false,
                        })
                    }
                    // Another signer took this number meanwhile: look again.
                    Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => tmp = e.file,
                    Err(e) => return Err(err(&path)(e.error)),
                }
            }
            Err(e) => return Err(err(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_numbered_without_gaps_and_not_repeated() {
        let root = tempfile::tempdir().unwrap();
        let digest = Digest::of(b"manifest");
        let a = store(root.path(), "imgrep/greet", &digest, b"first").unwrap();
        let b = store(root.path(), "imgrep/greet", &digest, b"second").unwrap();
        let again = store(root.path(), "imgrep/greet", &digest, b"first").unwrap();
        let dir = root
            .path()
            .join(format!("imgrep/greet@sha256={}", digest.hex()));
        assert_eq!(a.path, dir.join("signature-1"));
        assert_eq!(b.path, dir.join("signature-2"));
        assert!(!a.existed && !b.existed && again.existed);
        assert_eq!(again.path, a.path);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["signature-1", "signature-2"],
            "no temporary file is left"
        );
    }
}
