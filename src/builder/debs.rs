//! `kind = "debs"`: an image assembled from pinned Debian binary packages,
//! unpacked by imgrep itself, with no build step (docs/recipes.md).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::beneath::Dir;
use crate::deb::Deb;
use crate::recipe::Recipe;
use crate::unpack::{self, UnpackOptions};

use super::sources::Ready;
use super::BuildError;

/// Unpacks every .deb's data.tar into `out`, in source order, then adds the
/// declared empty directories and symbolic links. Paths are resolved
/// beneath `out` and never through a link: a .deb may ship `bin -> /etc`,
/// which in the image means the image's /etc, and on the host nothing.
/// Device nodes and fifos are left out, each said on stderr.
pub fn assemble(recipe: &Recipe, debs: &[Ready], out: &Path) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Source {
        package: recipe.name.clone(),
        message,
    };
    for got in debs {
        let mut deb = Deb::open(&got.path).map_err(|e| fail(e.to_string()))?;
        let data = deb.data().map_err(|e| fail(e.to_string()))?;
        let report = unpack::unpack(data, out, &UnpackOptions::DEB)
            .map_err(|e| fail(format!("{}: {e}", got.path.display())))?;
        for skipped in &report.skipped {
            eprintln!(
                "imgrep: {}: {}: left out {skipped} (an image holds none)",
                recipe.name,
                got.path.display()
            );
        }
    }
    links_and_dirs(recipe, out)
}

/// Adds the declared empty directories and symbolic links of `[debs]` or
/// `[wheel]` to the assembled image `out`, beneath it, never through a link.
pub fn links_and_dirs(recipe: &Recipe, out: &Path) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Source {
        package: recipe.name.clone(),
        message,
    };
    let Some(spec) = &recipe.debs else {
        return Ok(());
    };
    let table = recipe.kind.as_str();
    let root = Dir::open(out).map_err(|e| fail(format!("{}: {e}", out.display())))?;
    let through =
        format!("; a path of [{table}] is the path the packages ship, not one through their links");
    for dir in &spec.dirs {
        root.create_dirs(Path::new(dir), 0o755)
            .map_err(|e| fail(format!("{table}.dirs {dir:?}: {e}{through}")))?;
    }
    for (link, target) in &spec.symlinks {
        let p = Path::new(link);
        let (parent, name) = (p.parent().unwrap_or(Path::new("")), p.file_name());
        let name = name.ok_or_else(|| fail(format!("{table}.symlinks {link:?}: no file name")))?;
        let dir = root
            .create_dirs(parent, 0o755)
            .map_err(|e| fail(format!("{table}.symlinks {link:?}: {e}{through}")))?;
        dir.symlink(name.as_bytes(), target.as_bytes())
            .map_err(|e| {
                fail(format!(
                    "{table}.symlinks {link:?} -> {target}: {e} (a package ships that path already?)"
                ))
            })?;
    }
    Ok(())
}
