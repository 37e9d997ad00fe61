//! The local cache: a package's input digest, the store's record of the
//! image built from it, and the input document of its last build (which
//! `imgrep plan` compares to say what changed).

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::image::Descriptor;

use super::{Builder, Built};
use crate::digest::Digest;
use crate::layer;
use crate::recipe::Recipe;

impl Builder<'_> {
    /// The input digest of `name` given its build root's images, and the
    /// document it hashes.
    pub fn input_of(
        &self,
        recipe: &Recipe,
        done: &BTreeMap<String, Built>,
    ) -> Option<(Digest, Vec<u8>)> {
        // A dependency counts as the image it provides, whichever recipe made
        // it (src/recipe/output.rs).
        let provides = |name: &str| {
            self.graph
                .recipe(name)
                .map_or_else(|_| name.to_owned(), |r| r.provides().to_owned())
        };
        let mut deps = Vec::new();
        for dep in self.graph.build_root(&recipe.name) {
            deps.push((provides(dep), done.get(dep)?.manifest_digest()));
        }
        let json = recipe
            .keyed_by_images(provides)
            .input_json(&deps, layer::FORMAT_VERSION);
        Some((Digest::of(&json), json))
    }

    /// The cached image of an input digest, if the store has it whole.
    pub fn cached(&self, input: &Digest, name: &str) -> Option<(Descriptor, Vec<Digest>)> {
        let manifest = self.store.record(input).ok()??;
        let image = self.layout.stored_image(&manifest, name).ok()?;
        Some(image)
    }

    /// The input document of the last build of `name` (for `imgrep plan`).
    pub fn inputs_path(&self, name: &str) -> PathBuf {
        self.store
            .root()
            .join("inputs")
            .join(format!("{name}.json"))
    }
}
