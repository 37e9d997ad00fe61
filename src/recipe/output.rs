//! Fixed-output recipes (`[output]`, docs/recipes.md), after Nix's
//! fixed-output derivations: a recipe that declares the layer it must produce
//! provides an image that depends on that declaration alone. Two recipes that
//! reach the same layer by different means (two seeds, a binary and a source
//! build) provide one image, and dependants key their cache by that image
//! and the name it goes by, never by which recipe made it ("hash modulo
//! fixed outputs").

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::diag::{Diagnostic, Position};
use super::Recipe;

impl Recipe {
    /// The image dependants see: `[output].image` for a fixed-output recipe,
    /// else the package itself.
    pub fn provides(&self) -> &str {
        self.output.as_ref().map_or(&self.name, |o| &o.image)
    }

    /// This recipe with every `deps` and `runtime` entry renamed to the image
    /// it provides (`provides` maps a package name to it): the form the input
    /// digest hashes, so that choosing another recipe for a fixed output
    /// leaves every dependant's cache key as it was.
    pub fn keyed_by_images(&self, provides: impl Fn(&str) -> String) -> Recipe {
        let mut r = self.clone();
        let rename = |names: &mut Vec<String>| {
            for n in names.iter_mut() {
                *n = provides(n);
            }
        };
        rename(&mut r.runtime);
        if let Some(b) = r.build.as_mut() {
            rename(&mut b.deps);
        }
        r
    }

    /// Everything a fixed-output recipe's image is made of besides its layer
    /// bytes; recipes that provide one image must agree on all of it.
    /// `None` for other recipes.
    pub fn output_identity(&self) -> Option<Value> {
        let o = self.output.as_ref()?;
        let i = &self.image;
        Some(json!({
            "image": o.image,
            "diff_id": o.diff_id.to_string(),
            "version": self.version,
            "source_date_epoch": self.source_date_epoch(),
            "runtime": self.runtime,
            "config": { "entrypoint": i.entrypoint, "cmd": i.cmd, "env": i.env, "workdir": i.workdir },
        }))
    }
}

/// The checks across recipes that provide one image: an image provided under
/// another package's name must be that package's own fixed output, and every
/// recipe providing an image declares the same output. `outputs` holds where
/// each fixed-output recipe's `[output]` is.
pub(super) fn check_providers(
    recipes: &BTreeMap<String, Recipe>,
    outputs: &BTreeMap<String, (PathBuf, Position)>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut providers: BTreeMap<&str, Vec<&Recipe>> = BTreeMap::new();
    for r in recipes.values().filter(|r| r.output.is_some()) {
        providers.entry(r.provides()).or_default().push(r);
    }
    for (image, group) in providers {
        // The package of that name, if it is a provider, is the reference.
        let reference = match recipes.get(image) {
            Some(owner) if owner.output.is_some() && owner.provides() == image => owner,
            Some(owner) => {
                for r in &group {
                    report(outputs, diags, r, format!(
                        "output.image `{image}` is the package {}, which is not a fixed-output recipe providing it",
                        owner.path.display()
                    ));
                }
                continue;
            }
            None => group[0],
        };
        let want = reference
            .output_identity()
            .expect("providers have [output]");
        for r in group.iter().filter(|r| r.name != reference.name) {
            let got = r.output_identity().expect("providers have [output]");
            let differ: Vec<&str> = [
                "diff_id",
                "version",
                "source_date_epoch",
                "runtime",
                "config",
            ]
            .into_iter()
            .filter(|k| got[k] != want[k])
            .collect();
            if !differ.is_empty() {
                report(outputs, diags, r, format!(
                    "provides image `{image}`, as {} does, but differs from it in: {} (recipes providing one image declare one output)",
                    reference.path.display(),
                    differ.join(", ")
                ));
            }
        }
    }
}

fn report(
    outputs: &BTreeMap<String, (PathBuf, Position)>,
    diags: &mut Vec<Diagnostic>,
    r: &Recipe,
    message: String,
) {
    let (path, pos) = &outputs[&r.name];
    diags.push(Diagnostic {
        path: path.clone(),
        position: Some(*pos),
        message: format!("[output]: {message}"),
    });
}
