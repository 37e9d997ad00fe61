//! The remote build cache (docs/registry.md): before building, each
//! `--cache-from` registry is asked for an image of the same input digest
//! (tag `input-<hex>`); after building, the image is pushed to `--cache-to`.

use oci_spec::image::Descriptor;

use super::{to_digest, BuildError, Builder, Built};
use crate::digest::Digest;
use crate::oci::{self, Layout};
use crate::recipe::Recipe;

impl Builder<'_> {
    /// `PREFIX/NAME:input-<hex>`: where a remote cache keeps an input's image.
    fn cache_ref(
        prefix: &str,
        name: &str,
        input: &Digest,
    ) -> Result<crate::registry::Reference, BuildError> {
        let r = format!("{prefix}/{name}:{}", crate::registry::input_tag(input));
        r.parse().map_err(
            |e: crate::registry::ReferenceError| BuildError::RemoteCache {
                package: name.to_owned(),
                message: e.to_string(),
            },
        )
    }

    /// Looks the input digest up in each `cache_from` registry; a hit is
    /// fetched into the store (every blob verified by digest and size, every
    /// layer by diff_id), checked to carry this input digest, and recorded.
    pub(super) fn lookup_remote_cache(
        &self,
        recipe: &Recipe,
        input: &Digest,
    ) -> Result<Option<(Descriptor, Vec<Digest>)>, BuildError> {
        let Some(client) = &self.registry else {
            return Ok(None);
        };
        let fail = |message: String| BuildError::RemoteCache {
            package: recipe.name.clone(),
            message,
        };
        for prefix in &self.opts.cache_from {
            let reference = Self::cache_ref(prefix, &recipe.name, input)?;
            let desc = match client.fetch_image(&reference, &self.layout) {
                Ok(d) => d,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(fail(e.to_string())),
            };
            let digest = to_digest(desc.digest()).map_err(|e| fail(e.to_string()))?;
            let image = self
                .layout
                .read_manifest(&digest, desc.size(), &reference.to_string(), true)
                .map_err(|e| fail(e.to_string()))?;
            // A fixed output's image carries its declared diff_id instead
            // of an input digest; its layer was verified against its diff_id.
            let (label, what, want) = match &recipe.output {
                Some(o) => (
                    oci::ANNOTATION_FIXED_OUTPUT,
                    "fixed output",
                    o.diff_id.to_string(),
                ),
                None => (
                    oci::ANNOTATION_INPUT_DIGEST,
                    "input digest",
                    input.to_string(),
                ),
            };
            let labelled = image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.labels().as_ref())
                .and_then(|l| l.get(label).cloned());
            let layers = image.config.rootfs().diff_ids();
            let fixed_ok = recipe.output.is_none() || layers.as_slice() == [want.clone()];
            if labelled.as_deref() != Some(want.as_str()) || !fixed_ok {
                return Err(fail(format!(
                    "{reference} is labelled with {what} {}, expected {want}: refusing it",
                    labelled.as_deref().unwrap_or("(none)")
                )));
            }
            self.store.write_record(input, &digest)?;
            if self.opts.verbose {
                crate::progress::info(format_args!(
                    "imgrep: {} {} from the remote cache {reference}",
                    recipe.name, recipe.version
                ));
            }
            let (desc, diff_ids) = self
                .layout
                .stored_image(&digest, &recipe.name)
                .map_err(|e| fail(e.to_string()))?;
            return Ok(Some((desc, diff_ids)));
        }
        Ok(None)
    }

    /// Pushes a freshly built image to the `cache_to` registry.
    pub(super) fn push_remote_cache(&self, built: &Built) -> Result<(), BuildError> {
        let (Some(client), Some(prefix), Some(out)) =
            (&self.registry, &self.opts.cache_to, &self.opts.out)
        else {
            return Ok(());
        };
        let fail = |message: String| BuildError::RemoteCache {
            package: built.name.clone(),
            message,
        };
        let reference = Self::cache_ref(prefix, &built.name, &built.input)?;
        let layout = Layout::open(out).map_err(|e| fail(e.to_string()))?;
        let ref_name = format!("{}:{}", built.name, built.version);
        client
            .push_image(&layout, &ref_name, &reference)
            .map_err(|e| fail(e.to_string()))?;
        if self.opts.verbose {
            crate::progress::info(format_args!(
                "imgrep: pushed {ref_name} to the remote cache {reference}"
            ));
        }
        Ok(())
    }
}
