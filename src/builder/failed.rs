//! Kept failures: the work directory of a failed build, moved under the
//! store's `failed/NAME` with the `lowers.json` that `imgrep shell` needs to
//! enter it again.

use std::fs;
use std::path::PathBuf;

use super::{Builder, Lowers};
use crate::recipe::Recipe;

/// Where, in a package's work directory, the sandbox saves an in-memory
/// `/build` when a step fails.
pub(super) const SAVED_BUILD_DIR: &str = "build-saved";

impl Builder<'_> {
    /// The directory a failed build of `name` is kept in, for `imgrep shell`.
    pub fn failed_dir(&self, name: &str) -> PathBuf {
        self.store.root().join("failed").join(name)
    }

    /// Keeps a failed build's work directory for `imgrep shell`, replacing
    /// the previous failure of the same package. An in-memory `/build` the
    /// sandbox saved when a step failed replaces the work directory's
    /// `build/`: it is the whole of `/build`, with no tree below it.
    pub(super) fn keep_failed(&self, recipe: &Recipe, work: tempfile::TempDir, lowers: &Lowers) {
        let dest = self.failed_dir(&recipe.name);
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
                dest.join("lowers.json"),
                serde_json::to_vec(&lowers).expect("paths serialize"),
            );
        } else {
            let _ = crate::store::remove_tree(&kept);
        }
    }
}
