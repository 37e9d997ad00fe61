//! Publishing to `out/`: each image's blobs copied from the store into the
//! recipe tree's `out/` layout and tagged `NAME:VERSION` in its index.json.

use super::{sources, to_digest, BuildError, Builder, Built};
use crate::digest::Digest;
use crate::oci::{self, Layout};

impl Builder<'_> {
    /// Digests of every blob of `built`'s image: manifest, config, layers.
    pub fn image_blobs(&self, built: &Built) -> Result<Vec<Digest>, BuildError> {
        let manifest_digest = built.manifest_digest();
        let image = self
            .layout
            .read_manifest(&manifest_digest, built.manifest.size(), &built.name, false)
            .map_err(|source| BuildError::Oci {
                package: built.name.clone(),
                error: source,
            })?;
        let mut blobs = vec![manifest_digest, image.config_digest];
        for l in image.manifest.layers() {
            blobs.push(to_digest(l.digest()).expect("read_manifest verified the digest"));
        }
        Ok(blobs)
    }

    /// Copies `built`'s blobs into `out/` and tags it `NAME:VERSION` there.
    pub(super) fn publish(&self, built: &Built) -> Result<(), BuildError> {
        let Some(out) = &self.opts.out else {
            return Ok(());
        };
        let oci_err = |source| BuildError::Oci {
            package: built.name.clone(),
            error: source,
        };
        let layout = Layout::create(out).map_err(oci_err)?;
        let ref_name = format!("{}:{}", built.name, built.version);
        let mut manifest = built.manifest.clone();
        // Which recipe made a fixed-output image is recorded beside it, in
        // index.json, where it changes no digest.
        let recipe = self.graph.recipe(&built.name)?;
        let recorded = recipe.output.is_some().then(|| built.input.to_string());
        if let Some(input) = &recorded {
            let sources =
                crate::canonical::to_vec(&sources::describe(recipe)).expect("strings serialize");
            manifest.set_annotations(Some(
                [
                    (oci::ANNOTATION_RECIPE.to_owned(), built.name.clone()),
                    (oci::ANNOTATION_INPUT_DIGEST.to_owned(), input.clone()),
                    (
                        oci::ANNOTATION_SOURCES.to_owned(),
                        String::from_utf8(sources).expect("JSON is UTF-8"),
                    ),
                ]
                .into(),
            ));
        }
        let wanted = (built.manifest.digest().to_string(), recorded);
        if self.tagged(&layout, &ref_name).map_err(oci_err)?.as_ref() == Some(&wanted) {
            return Ok(());
        }
        layout
            .copy_blobs(&self.layout, &self.image_blobs(built)?)
            .map_err(|source| BuildError::Io {
                package: built.name.clone(),
                what: format!("copying the blobs of {} to {}", built.name, out.display()),
                error: source,
            })?;
        layout.set_ref(&ref_name, &manifest).map_err(oci_err)?;
        if let Some(tags) = self.tags.lock().expect("tags lock").as_mut() {
            tags.insert(ref_name, wanted);
        }
        Ok(())
    }

    /// The manifest digest `ref_name` is tagged with in `layout` (`out/`),
    /// and the input digest recorded beside it (fixed outputs).
    pub(super) fn tagged(
        &self,
        layout: &Layout,
        ref_name: &str,
    ) -> Result<Option<oci::Tag>, oci::Error> {
        let mut tags = self.tags.lock().expect("tags lock");
        if tags.is_none() {
            *tags = Some(layout.tags()?);
        }
        Ok(tags.as_ref().and_then(|t| t.get(ref_name).cloned()))
    }
}
