//! Local source directories (docs/fetch.md): where a pinned source may be
//! found on disk before any network access, and copying a tree out of one.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;

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
/// files with their mode, directories, and symbolic links whose targets
/// stay inside the tree (the rule the unpacker applies to sources), all with
/// their modification times (make compares them). Never follows a link.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    copy_inner(src, dst, 0)
}

fn copy_mtime(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        None,
        to,
        &TimeSpec::UTIME_OMIT,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

fn copy_inner(src: &Path, dst: &Path, depth: usize) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_dir() {
            fs::create_dir(&to)?;
            copy_inner(&from, &to, depth + 1)?;
            fs::set_permissions(&to, fs::metadata(&from)?.permissions())?;
            copy_mtime(&from, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from)?;
            if escapes(&target, depth) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: symbolic link to {} leaves the tree",
                        from.display(),
                        target.display()
                    ),
                ));
            }
            symlink(&target, &to)?;
            copy_mtime(&from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to)?;
            copy_mtime(&from, &to)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a regular file, directory or symbolic link",
                    from.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Lexical check of a link target placed `depth` directories deep.
fn escapes(target: &Path, depth: usize) -> bool {
    let mut d = depth as isize;
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return true,
            Component::ParentDir => d -= 1,
            Component::Normal(_) => d += 1,
            Component::CurDir => {}
        }
        if d < 0 {
            return true;
        }
    }
    false
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

    #[test]
    fn escaping_links() {
        assert!(!escapes(Path::new("a/../b"), 0));
        assert!(escapes(Path::new("../b"), 0));
        assert!(!escapes(Path::new("../b"), 1));
        assert!(escapes(Path::new("/etc/passwd"), 3));
    }
}
