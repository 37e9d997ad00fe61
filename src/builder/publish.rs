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
        self.publish_all(std::slice::from_ref(built))
    }

    /// [`Builder::publish`] of each of `builts` together: every blob they
    /// lack in `out/` copied with the fsyncs at once, then one write of
    /// index.json for all their tags.
    pub(super) fn publish_all(&self, builts: &[Built]) -> Result<(), BuildError> {
        let (Some(out), Some(first)) = (&self.opts.out, builts.first()) else {
            return Ok(());
        };
        let oci_err = |source| BuildError::Oci {
            package: first.name.clone(),
            error: source,
        };
        let layout = Layout::create(out).map_err(oci_err)?;
        let (mut blobs, mut refs, mut tags) = (Vec::new(), Vec::new(), Vec::new());
        for built in builts {
            let ref_name = format!("{}:{}", built.name, built.version);
            let mut manifest = built.manifest.clone();
            // Which recipe made a fixed-output image is recorded beside it, in
            // index.json, where it changes no digest.
            let recipe = self.graph.recipe(&built.name)?;
            let recorded = recipe.output.is_some().then(|| built.input.to_string());
            if let Some(input) = &recorded {
                let sources = crate::canonical::to_vec(&sources::describe(recipe))
                    .expect("strings serialize");
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
                continue;
            }
            blobs.extend(self.image_blobs(built)?);
            refs.push((ref_name.clone(), manifest));
            tags.push((ref_name, wanted));
        }
        if refs.is_empty() {
            return Ok(());
        }
        blobs.sort();
        blobs.dedup();
        layout
            .copy_blobs(&self.layout, &blobs)
            .map_err(|source| BuildError::Io {
                package: first.name.clone(),
                what: format!("copying image blobs to {}", out.display()),
                error: source,
            })?;
        layout.set_refs(&refs).map_err(oci_err)?;
        if let Some(known) = self.tags.lock().expect("tags lock").as_mut() {
            known.extend(tags);
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
