//! Kept failures: the work directory of a failed build, moved under the
//! store's `failed/NAME` with the `lowers.json` that `imgrep shell` needs to
//! enter it again.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::{BuildError, Builder, Lowers};
use crate::recipe::Recipe;
use crate::store::Store;

/// Where, in a package's work directory, the sandbox saves an in-memory
/// `/build` when a step fails.
pub(super) const SAVED_BUILD_DIR: &str = "build-saved";

/// Beside a kept failure: the [`Lowers`] its sandbox was made of.
const LOWERS_FILE: &str = "lowers.json";

/// The directory a failed build of `name` is kept in, for `imgrep shell`.
pub fn failed_dir(store: &Store, name: &str) -> PathBuf {
    store.root().join("failed").join(name)
}

/// The kept failure of `name`, if any: its directory (the work directory of
/// the build) and the read-only trees its sandbox was made of.
pub fn kept_failure(store: &Store, name: &str) -> Result<Option<(PathBuf, Lowers)>, BuildError> {
    let dir = failed_dir(store, name);
    if !dir.is_dir() {
        return Ok(None);
    }
    let path = dir.join(LOWERS_FILE);
    let io_err = |what: &str, error| BuildError::Io {
        package: name.to_owned(),
        what: format!("{what} {}", path.display()),
        error,
    };
    let bytes = fs::read(&path).map_err(|e| io_err("reading", e))?;
    let lowers = serde_json::from_slice(&bytes)
        .map_err(|e| io_err("parsing", io::Error::new(io::ErrorKind::InvalidData, e)))?;
    Ok(Some((dir, lowers)))
}

impl Builder<'_> {
    /// Keeps a failed build's work directory for `imgrep shell`, replacing
    /// the previous failure of the same package. An in-memory `/build` the
    /// sandbox saved when a step failed replaces the work directory's
    /// `build/`: it is the whole of `/build`, with no tree below it.
    pub(super) fn keep_failed(&self, recipe: &Recipe, work: tempfile::TempDir, lowers: &Lowers) {
        let dest = failed_dir(self.store, &recipe.name);
        let _ = crate::store::remove_tree(&dest);
        let _ = fs::create_dir_all(dest.parent().expect("failed/ has a parent"));
        let kept = work.keep();
        let mut lowers = lowers.clone();
        let saved = kept.join(SAVED_BUILD_DIR);
        if saved.is_dir() {
            let build = kept.join("build");
            if crate::store::remove_tree(&build).is_ok() && fs::rename(&saved, &build).is_ok() {
                lowers.build.clear();
            }
        }
        if fs::rename(&kept, &dest).is_ok() {
            let _ = fs::write(
                dest.join(LOWERS_FILE),
                serde_json::to_vec(&lowers).expect("paths serialize"),
            );
        } else {
            let _ = crate::store::remove_tree(&kept);
        }
    }
}
