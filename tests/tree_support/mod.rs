//! Copying recipe trees into scratch directories, for the tests that build
//! from a copy of the repository's recipes (stage0, bootstrap, ddc).

use std::fs;
use std::path::Path;

/// Copies the directory `from` to `to`, files and directories only (the
/// recipe trees hold no links).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}
