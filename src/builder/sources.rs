//! Sources into a build: fetched and verified before any step runs, then laid
//! out under the build directory in `[[source]]` order (docs/recipes.md).

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::beneath::{self, is_type, Dir};
use crate::digest::hash_reader;
use crate::fetch::local;
use crate::fetch::{self, Fetcher, SourceRequest};
use crate::nar::NarHash;
use crate::recipe::{Pin, Recipe, Source};
use crate::store::Store;
use crate::unpack::{self, UnpackOptions};
use nix::sys::stat::SFlag;

use super::BuildError;

/// A verified source: a file or (for tree pins) a read-only unpacked tree.
#[derive(Debug, Clone)]
pub struct Ready {
    pub path: PathBuf,
    pub is_tree: bool,
}

/// What the fetch module is asked for one source of `recipe`.
pub fn request(recipe: &Recipe, index: usize, source: &Source) -> SourceRequest {
    SourceRequest {
        name: format!(
            "{}: source {} ({})",
            recipe.name,
            index + 1,
            source.file_name()
        ),
        urls: source.urls.clone(),
        pin: match source.pin {
            Pin::Sha256(d) => fetch::Pin::File(d),
            Pin::Tree(h) => fetch::Pin::Tree(NarHash::from_bytes(h)),
        },
        subtree: source.subtree.as_ref().map(|s| fetch::Subtree {
            path: s.path.clone(),
            archive: s.archive,
        }),
    }
}

/// Makes every source of `recipe` present and verified.
pub fn fetch_all(
    recipe: &Recipe,
    root: &Path,
    store: &Store,
    fetcher: &Fetcher,
) -> Result<Vec<Ready>, BuildError> {
    recipe
        .sources
        .iter()
        .enumerate()
        .map(|(i, source)| match local_path(recipe, source, root) {
            Some(path) => local_file(recipe, path, source),
            None => {
                let got = fetcher.fetch(store, &request(recipe, i, source))?;
                Ok(Ready {
                    path: got.path,
                    is_tree: matches!(source.pin, Pin::Tree(_)),
                })
            }
        })
        .collect()
}

/// Where a source lives in the recipe tree itself: `path` (beside
/// package.toml) or a `repo:PATH` URL (relative to the tree's root, `-C`).
fn local_path(recipe: &Recipe, source: &Source, root: &Path) -> Option<PathBuf> {
    if let Some(rel) = &source.path {
        return Some(recipe.dir().join(rel));
    }
    let first = source.urls.first()?;
    first.strip_prefix("repo:").map(|rel| root.join(rel))
}

/// A source kept in the recipe tree (a patch, a seed), checked against its pin.
fn local_file(recipe: &Recipe, path: PathBuf, source: &Source) -> Result<Ready, BuildError> {
    let Pin::Sha256(expected) = source.pin else {
        return Err(BuildError::Source {
            package: recipe.name.clone(),
            message: format!("{}: a local file needs a sha256 pin", path.display()),
        });
    };
    let got = File::open(&path)
        .and_then(hash_reader)
        .map_err(|e| BuildError::Source {
            package: recipe.name.clone(),
            message: format!("{}: {e}", path.display()),
        })?
        .0;
    if got != expected {
        return Err(BuildError::Source {
            package: recipe.name.clone(),
            message: format!(
                "{}: sha256 mismatch: expected {}, got {}",
                path.display(),
                expected.hex(),
                got.hex()
            ),
        });
    }
    Ok(Ready {
        path,
        is_tree: false,
    })
}

/// Lays the sources out in the build directory `root`, in order, after its
/// `.home`, and returns the verified trees that are mounted at the build
/// directory instead of being copied into it (bottom first): with
/// `mount_trees` (`build_dir = "disk"`), every tree source whose `dest` is
/// `.`. Copying a store tree onto the disk cost a create per entry and an
/// unlink per entry afterwards; an overlay with the store's read-only tree
/// below and the build directory on top gives the steps the same files,
/// writable, for nothing. In memory (`root` is the sandbox's tmpfs) every
/// source is written there, once. Sources may not overlap: a path that two
/// of them provide is an error, mounted or not.
pub fn place(
    recipe: &Recipe,
    ready: &[Ready],
    root: &Dir,
    mount_trees: bool,
) -> Result<Vec<PathBuf>, BuildError> {
    root.create_dirs(Path::new(HOME), 0o755)
        .map_err(|e| BuildError::Io {
            package: recipe.name.clone(),
            what: format!("creating {}/{HOME}", super::env::BUILD_DIR),
            error: e.into(),
        })?;
    let mut mounted: Vec<(usize, &Path)> = Vec::new();
    for (i, (source, got)) in recipe.sources.iter().zip(ready).enumerate() {
        let err = |e: io::Error| BuildError::Source {
            package: recipe.name.clone(),
            message: format!(
                "source {} ({}): cannot place it under {}/{}: {e}",
                i + 1,
                source.file_name(),
                super::env::BUILD_DIR,
                source.dest
            ),
        };
        if got.is_tree && source.dest == "." && mount_trees {
            mounted.push((i, &got.path));
            continue;
        }
        // Earlier sources are untrusted trees: `dest` is resolved beneath
        // the build directory and never through a link one of them left.
        let dest = root
            .create_dirs(Path::new(&source.dest), 0o755)
            .map_err(|e| err(e.into()))?;
        if got.is_tree || source.unpack {
            // Laid out apart (on the same file system: moved in by
            // rename), checked, then moved in: links are judged within the
            // source once it has its final shape.
            let (mut name, tmp) = staging(root).map_err(err)?;
            if got.is_tree {
                local::copy_tree_into(&got.path, &tmp).map_err(err)?;
            } else {
                let into = tmp.try_clone().map_err(err)?;
                unpack::unpack_file_into(&got.path, into, &UnpackOptions::SOURCE).map_err(|e| {
                    BuildError::Source {
                        package: recipe.name.clone(),
                        message: format!("source {} ({}): {e}", i + 1, source.file_name()),
                    }
                })?;
                local::strip_and_check(&tmp).map_err(err)?;
            }
            // A source with an entry of the staging directory's own name
            // would be merged into itself.
            if tmp.stat(&name).map_err(|e| err(e.into()))?.is_some() {
                let other = free_name(root, Some(&tmp)).map_err(err)?;
                root.rename_to(&name, root, &other)
                    .map_err(|e| err(e.into()))?;
                name = other;
            }
            beneath::merge_into(&tmp, &dest).map_err(|e| err(e.into()))?;
            // Directories the merge entered are left behind, empty.
            root.remove_all(&name).map_err(|e| err(e.into()))?;
        } else {
            let name = source.file.as_deref().unwrap_or(source.file_name());
            let mode = if source.executable { 0o755 } else { 0o644 };
            copy_file(&got.path, &dest, name.as_bytes(), mode).map_err(err)?;
        }
    }
    for (k, &(i, tree)) in mounted.iter().enumerate() {
        let clash = match first_overlap(root, tree, Path::new("")) {
            Ok(None) => mounted[..k]
                .iter()
                .map(|m| Dir::open(m.1).and_then(|d| first_overlap(&d, tree, Path::new(""))))
                .find_map(Result::transpose)
                .transpose(),
            other => other,
        }
        .map_err(|e| BuildError::Io {
            package: recipe.name.clone(),
            what: format!("comparing source {} with the others", i + 1),
            error: e,
        })?;
        if let Some(rel) = clash {
            return Err(BuildError::Source {
                package: recipe.name.clone(),
                message: format!(
                    "source {} ({}): {}/{} is also provided by another source (sources overlap)",
                    i + 1,
                    recipe.sources[i].file_name(),
                    super::env::BUILD_DIR,
                    rel.display()
                ),
            });
        }
    }
    Ok(mounted.into_iter().map(|(_, p)| p.to_owned()).collect())
}

/// `$HOME` of the steps, under the build directory.
const HOME: &str = ".home";

/// A new, empty directory in `root` to lay a source out in.
fn staging(root: &Dir) -> io::Result<(Vec<u8>, Dir)> {
    let name = free_name(root, None)?;
    root.mkdir(&name, 0o700)?;
    let dir = root.child(&name)?;
    Ok((name, dir))
}

/// A name for a staging directory that neither `root` nor `also` holds.
fn free_name(root: &Dir, also: Option<&Dir>) -> io::Result<Vec<u8>> {
    for n in 0u32.. {
        let name = format!(".imgrep-source-{n}").into_bytes();
        if root.stat(&name)?.is_none() && also.map_or(Ok(None), |d| d.stat(&name))?.is_none() {
            return Ok(name);
        }
    }
    unreachable!("a free name among 2^32")
}

/// The first path (relative, under `rel`) that both `a` and `b` hold and that
/// is not a directory in both: what one of them would hide in an overlay.
fn first_overlap(a: &Dir, b: &Path, rel: &Path) -> io::Result<Option<PathBuf>> {
    for name in a.names()? {
        let theirs = match b.join(&name).symlink_metadata() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        let path = rel.join(&name);
        let ours = a.stat(name.as_bytes())?;
        let both_dirs = theirs.is_dir() && ours.is_some_and(|st| is_type(&st, SFlag::S_IFDIR));
        if !both_dirs {
            return Ok(Some(path));
        }
        let sub = a.child(name.as_bytes())?;
        if let Some(found) = first_overlap(&sub, &b.join(&name), &path)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Copies the verified file `from` into `dest` as `name` with `mode`; an
/// entry of that name (an earlier source's, a link above all) is an error,
/// never written through.
fn copy_file(from: &Path, dest: &Dir, name: &[u8], mode: u32) -> io::Result<()> {
    let mut src = File::open(from)?;
    let mut dst = dest.create_file(name, 0o600).map_err(|e| match e {
        nix::errno::Errno::EEXIST => io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists already (sources overlap)",
                String::from_utf8_lossy(name)
            ),
        ),
        e => e.into(),
    })?;
    io::copy(&mut src, &mut dst)?;
    dst.set_permissions(fs::Permissions::from_mode(mode))
}

/// The pins of `recipe`'s sources as images and statements record them:
/// `sha256:<hex> <first url or path>`, or `sha256-<base64> (tree) <url>`.
pub fn describe(recipe: &Recipe) -> Vec<String> {
    recipe
        .sources
        .iter()
        .map(|s| {
            let origin = s
                .path
                .clone()
                .or_else(|| s.urls.first().cloned())
                .unwrap_or_default();
            match s.pin {
                Pin::Sha256(d) => format!("{d} {origin}"),
                Pin::Tree(_) => format!("{} {origin}", s.pin.to_recipe_string()),
            }
        })
        .collect()
}
