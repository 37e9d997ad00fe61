//! Local source directories (docs/fetch.md): where a pinned source may be
//! found on disk before any network access, and copying a tree out of one.

use std::io;
use std::path::{Path, PathBuf};

use crate::beneath::{self, CheckError, Dir};
use crate::digest::Digest;
use crate::nar::NarHash;

/// The last path segment of a URL, if it can be a file name.
pub fn file_name_of(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// Candidate files for a file pin, in order: `<dir>/<hex>`,
/// `<dir>/sha256/<hex>` (another store's `sources/` or a seed export), then
/// `<dir>/<file name>` for each URL.
pub fn file_candidates(dirs: &[PathBuf], digest: &Digest, urls: &[String]) -> Vec<PathBuf> {
    let hex = digest.hex();
    let mut out = Vec::new();
    for dir in dirs {
        out.push(dir.join(&hex));
        out.push(dir.join("sha256").join(&hex));
        out.extend(
            urls.iter()
                .filter_map(|u| file_name_of(u))
                .map(|n| dir.join(n)),
        );
    }
    out.retain(|p| p.is_file());
    out.dedup();
    out
}

/// Candidates for a tree pin, in order: unpacked trees `<dir>/<nar hex>/`,
/// then archives `<dir>/<file name>` for each URL.
pub fn tree_candidates(dirs: &[PathBuf], hash: &NarHash, urls: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        let tree = dir.join(hash.hex());
        if tree.is_dir() {
            out.push(tree);
        }
        for name in urls.iter().filter_map(|u| file_name_of(u)) {
            let p = dir.join(name);
            if p.is_file() {
                out.push(p);
            }
        }
    }
    out.dedup();
    out
}

/// Copies the tree `src` into the existing empty directory `dst`: regular
/// files with their mode, directories, and symbolic links, all with their
/// modification times (make compares them), never following a link; then
/// refuses the copy if a link leaves it (the rule the unpacker applies to
/// sources), checked on the copy so that `src` cannot change in between.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    copy_tree_into(src, &Dir::open(dst)?)
}

/// [`copy_tree`] into the open, existing empty directory `to`.
pub fn copy_tree_into(src: &Path, to: &Dir) -> io::Result<()> {
    beneath::copy_tree(&Dir::open(src)?, to)?;
    check(to)
}

/// Strips a single top directory from the tree `dir` (as Nix's fetchzip
/// does), then refuses it if a link leaves it: a link that stayed inside
/// the top directory may climb out of the stripped tree.
pub fn strip_and_check(dir: &Dir) -> io::Result<()> {
    beneath::strip_single_top_dir(dir)?;
    check(dir)
}

/// Refuses the tree `dir` if a link leaves it (a subtree cut out of an
/// archive: the unpacker checked each link against it already; this is the
/// same check every tree source gets before it is hashed).
pub fn check_links(dir: &Path) -> io::Result<()> {
    check(&Dir::open(dir)?)
}

fn check(d: &Dir) -> io::Result<()> {
    d.check_links().map_err(|e| match e {
        CheckError::Escapes(e) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        CheckError::Io { path, error } => {
            io::Error::new(io::Error::from(error).kind(), format!("{path}: {error}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_file_names() {
        assert_eq!(
            file_name_of("https://h/a/musl-1.2.5.tar.gz"),
            Some("musl-1.2.5.tar.gz")
        );
        assert_eq!(file_name_of("https://h/a/x.tar?raw=1"), Some("x.tar"));
        assert_eq!(file_name_of("https://h/a/"), None);
        assert_eq!(file_name_of("mirror://debian/pool/b.deb"), Some("b.deb"));
    }
}
