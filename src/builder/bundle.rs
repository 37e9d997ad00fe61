//! Bundle images: a package with `runtime` dependencies also gets an image
//! of its whole runtime closure, one layer per package, bottom first, itself
//! last (`Graph::runtime_closure`), tagged `NAME:VERSION-bundle` in `out/`
//! beside its own one-layer image `NAME:VERSION`. That is the image users
//! run (`podman run oci:out:gcc:14.2.0-bundle gcc ...`), and the same layers
//! a recipe with `deps = ["NAME"]` gets as its build root.
//!
//! The bundle is written into `out/` only: it holds no layer of its own, and
//! its config and manifest are a function of the closure's images, which the
//! store keeps. Its config carries the package's `[image]` and labels naming
//! each image stacked (`dev.imgrep.bundle`); no input digest, since the
//! package's own does not cover its runtime dependencies' images.

use std::collections::BTreeMap;

use super::{run_config, to_digest, BuildError, Builder, Built};
use crate::compress::Compression;
use crate::layer::LayerInfo;
use crate::oci::{ImageLayer, ImageSpec, Layout};
use crate::recipe::Recipe;

/// Config label and manifest annotation of a bundle image: the canonical
/// JSON array of `NAME:VERSION@MANIFEST-DIGEST`, bottom first.
pub const ANNOTATION_BUNDLE: &str = "dev.imgrep.bundle";

/// The ref a package's bundle image gets in `out/`.
pub fn bundle_ref(name: &str, version: &str) -> String {
    format!("{name}:{version}-bundle")
}

/// The history line of a package's layer, in its own image and in bundles.
pub(super) fn created_by(recipe: &Recipe) -> String {
    match &recipe.output {
        Some(o) => format!("imgrep build {} {} (fixed output)", o.image, recipe.version),
        None => format!("imgrep build {} {}", recipe.name, recipe.version),
    }
}

impl Builder<'_> {
    /// Writes and tags `built`'s bundle image in `out/` when the package has
    /// runtime dependencies (all of which are in `done`).
    pub(super) fn publish_bundle(
        &self,
        built: &Built,
        done: &BTreeMap<String, Built>,
    ) -> Result<(), BuildError> {
        let Some(out) = &self.opts.out else {
            return Ok(());
        };
        let recipe = self.graph.recipe(&built.name)?;
        if recipe.runtime.is_empty() {
            return Ok(());
        }
        let oci_err = |error| BuildError::Oci {
            package: built.name.clone(),
            error,
        };
        let layout = Layout::create(out).map_err(oci_err)?;
        let mut layers = Vec::new();
        let mut stacked = Vec::new();
        for name in self.graph.runtime_closure(&built.name) {
            let member = if name == built.name {
                built
            } else {
                done.get(name)
                    .expect("runtime dependencies are built before their dependant")
            };
            let image = self
                .layout
                .read_manifest(
                    &member.manifest_digest(),
                    member.manifest.size(),
                    name,
                    false,
                )
                .map_err(oci_err)?;
            let member_recipe = self.graph.recipe(name)?;
            for (layer, diff_id) in image.manifest.layers().iter().zip(&member.diff_ids) {
                let digest = to_digest(layer.digest()).expect("read_manifest verified the digest");
                layout
                    .copy_blob(&self.layout, &digest)
                    .map_err(|error| BuildError::Io {
                        package: built.name.clone(),
                        what: format!("copying blob {digest} to {}", out.display()),
                        error,
                    })?;
                let found = layer.media_type().to_string();
                let media_type = Compression::from_layer_media_type(&found)
                    .map(Compression::layer_media_type)
                    .filter(|m| *m == found)
                    .ok_or_else(|| BuildError::Io {
                        package: built.name.clone(),
                        what: format!("stacking layer {digest} of {name}"),
                        error: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("media type {found} is not one imgrep writes"),
                        ),
                    })?;
                layers.push(ImageLayer {
                    layer: LayerInfo {
                        diff_id: *diff_id,
                        digest,
                        size: layer.size(),
                        media_type,
                    },
                    created_by: created_by(member_recipe),
                });
            }
            stacked.push(format!(
                "{}:{}@{}",
                member.name,
                member.version,
                member.manifest_digest()
            ));
        }
        let stacked = crate::canonical::to_vec(&stacked).expect("strings serialize");
        let spec = ImageSpec {
            name: built.name.clone(),
            version: built.version.clone(),
            source_date_epoch: recipe.source_date_epoch(),
            labels: [(
                ANNOTATION_BUNDLE.to_owned(),
                String::from_utf8(stacked).expect("JSON is UTF-8"),
            )]
            .into(),
            ..run_config(recipe)
        };
        let manifest = layout.write_image_blobs(&spec, &layers).map_err(oci_err)?;
        let ref_name = bundle_ref(&built.name, &built.version);
        let wanted = (manifest.digest().to_string(), None);
        if self.tagged(&layout, &ref_name).map_err(oci_err)?.as_ref() == Some(&wanted) {
            return Ok(());
        }
        layout.set_ref(&ref_name, &manifest).map_err(oci_err)?;
        if let Some(tags) = self.tags.lock().expect("tags lock").as_mut() {
            tags.insert(ref_name, wanted);
        }
        Ok(())
    }
}
