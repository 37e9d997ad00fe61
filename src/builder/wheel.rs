//! `kind = "wheel"`: an image assembled from pinned Python wheels (zip
//! archives), unpacked by imgrep itself through the safe unpacker, with no
//! build step (docs/recipes.md).

use std::path::Path;

use crate::beneath::Dir;
use crate::recipe::Recipe;
use crate::unpack::{zip, UnpackOptions};

use super::sources::Ready;
use super::BuildError;

/// Unpacks each wheel into `out/<dest>` in source order, then adds the
/// declared empty directories and symbolic links. A wheel is held to the
/// rules of a source archive: every path inside its destination, no links,
/// no special files, no duplicates.
pub fn assemble(recipe: &Recipe, wheels: &[Ready], out: &Path) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Source {
        package: recipe.name.clone(),
        message,
    };
    for (source, got) in recipe.sources.iter().zip(wheels) {
        // `dest` is the recipe's own relative path without `..`; an earlier
        // wheel holds no links, and it is created beneath `out` regardless.
        let root = Dir::open(out).map_err(|e| fail(format!("{}: {e}", out.display())))?;
        root.create_dirs(Path::new(&source.dest), 0o755)
            .map_err(|e| fail(format!("creating {}: {e}", source.dest)))?;
        let dest = out.join(&source.dest);
        zip::unpack_zip(&got.path, &dest, &UnpackOptions::SOURCE).map_err(|e| {
            fail(format!(
                "{} ({}): {}",
                source.file_name(),
                got.path.display(),
                chain(&e)
            ))
        })?;
    }
    super::debs::links_and_dirs(recipe, out)
}

/// An error and its causes, one after the other: `BuildError::Source`
/// carries a message, not a source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
