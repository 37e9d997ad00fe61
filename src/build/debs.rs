//! `kind = "debs"`: an image assembled from pinned Debian binary packages,
//! unpacked by imgrep itself, with no build step (docs/recipes.md).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::deb::Deb;
use crate::recipe::Recipe;
use crate::unpack::{self, UnpackOptions};

use super::sources::Ready;
use super::BuildError;

/// Unpacks every .deb's data.tar into `out`, in source order, then adds the
/// declared empty directories and symbolic links.
pub fn assemble(recipe: &Recipe, debs: &[Ready], out: &Path) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Source {
        package: recipe.name.clone(),
        message,
    };
    for got in debs {
        let mut deb = Deb::open(&got.path).map_err(|e| fail(e.to_string()))?;
        let data = deb.data().map_err(|e| fail(e.to_string()))?;
        unpack::unpack(data, out, &UnpackOptions::DEB)
            .map_err(|e| fail(format!("{}: {e}", got.path.display())))?;
    }
    let Some(spec) = &recipe.debs else {
        return Ok(());
    };
    for dir in &spec.dirs {
        let p = out.join(dir);
        fs::create_dir_all(&p).map_err(|e| fail(format!("directory {dir}: {e}")))?;
    }
    for (link, target) in &spec.symlinks {
        let p = out.join(link);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| fail(format!("symlink {link}: {e}")))?;
        }
        symlink(target, &p).map_err(|e| {
            fail(format!(
                "symlink {link} -> {target}: {e} (a package ships that path already?)"
            ))
        })?;
    }
    Ok(())
}
