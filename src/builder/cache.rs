//! The local cache: a package's input digest, the store's record of the
//! image built from it, and the input document of its last build (which
//! `imgrep plan` compares to say what changed); and images of the same
//! input digest taken from another store (`reproduce --reuse-deps`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::image::Descriptor;

use super::{BuildError, Builder, Built};
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

    /// The image of `input` from the store `opts.reuse` names, if it has
    /// one whole: its manifest, config and layers are verified (digest and
    /// size) and copied here, and the record written, as if it had been
    /// built here.
    pub(super) fn import_cached(
        &self,
        recipe: &Recipe,
        input: &Digest,
    ) -> Result<Option<(Descriptor, Vec<Digest>)>, BuildError> {
        let Some((other, layout)) = &self.reused else {
            return Ok(None);
        };
        let Some(manifest) = other.record(input)? else {
            return Ok(None);
        };
        let from = other.root();
        let oci_err = |error| BuildError::Oci {
            package: recipe.name.clone(),
            error,
        };
        let io_err = |what: String| {
            let package = recipe.name.clone();
            move |error| BuildError::Io {
                package,
                what,
                error,
            }
        };
        let size = std::fs::metadata(layout.blob_path(&manifest))
            .map_err(io_err(format!("reading {manifest} in {}", from.display())))?
            .len();
        let image = layout
            .read_manifest(&manifest, size, &recipe.name, false)
            .map_err(oci_err)?;
        let mut blobs = vec![manifest, image.config_digest];
        for l in image.manifest.layers() {
            blobs.push(super::to_digest(l.digest()).expect("read_manifest verified the digest"));
        }
        self.layout
            .copy_blobs(layout, &blobs)
            .map_err(io_err(format!(
                "copying the blobs of {manifest} from {}",
                from.display()
            )))?;
        self.store.write_record(input, &manifest)?;
        if self.opts.verbose {
            crate::progress::info(format_args!(
                "imgrep: {} {} taken from {} (not rebuilt)",
                recipe.name,
                recipe.version,
                from.display()
            ));
        }
        Ok(self.cached(input, &recipe.name))
    }

    /// The input document of the last build of `name` (for `imgrep plan`).
    pub fn inputs_path(&self, name: &str) -> PathBuf {
        self.store
            .root()
            .join("inputs")
            .join(format!("{name}.json"))
    }
}
