//! `imgrep plan`: the closure in build order, each package cached or not
//! and why, without building or fetching anything.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use oci_spec::image::Descriptor;

use super::{short, to_digest, BuildError, Builder, Built};
use crate::digest::Digest;
use crate::recipe::Recipe;

/// What `imgrep build` would do for one package.
#[derive(Debug, Clone)]
pub struct PlanItem {
    pub name: String,
    pub version: String,
    /// Known when every package of the build root is cached.
    pub input: Option<Digest>,
    /// The cached image, if any.
    pub cached: Option<Built>,
    /// Why it will be built: which inputs changed since the last build.
    pub reasons: Vec<String>,
}

impl Builder<'_> {
    /// The closure of `roots` in build order, each package cached or not and
    /// why, without building or fetching anything.
    pub fn plan(&self, roots: &[&str]) -> Result<Vec<PlanItem>, BuildError> {
        let mut done: BTreeMap<String, Built> = BTreeMap::new();
        let mut items = Vec::new();
        for recipe in self.graph.closure(roots)? {
            let rebuilt_deps: Vec<&str> = self
                .graph
                .build_root(&recipe.name)
                .into_iter()
                .filter(|d| !done.contains_key(*d))
                .collect();
            let mut item = PlanItem {
                name: recipe.name.clone(),
                version: recipe.version.clone(),
                input: None,
                cached: None,
                reasons: Vec::new(),
            };
            if !rebuilt_deps.is_empty() {
                item.reasons.push(format!(
                    "its build root is rebuilt first: {}",
                    rebuilt_deps.join(", ")
                ));
            } else if let Some((input, json)) = self.input_of(recipe, &done) {
                item.input = Some(input);
                match self.cached(&input, &recipe.name) {
                    Some((manifest, diff_ids)) if !self.opts.rebuild => {
                        let built =
                            Built::new(recipe, input, (manifest, diff_ids), true, Duration::ZERO);
                        done.insert(recipe.name.clone(), built.clone());
                        item.cached = Some(built);
                    }
                    _ => {
                        item.reasons = self.why(&recipe.name, &json);
                        // Another recipe of the same fixed output already
                        // built its image: a build that passes the output
                        // check gives that image, so the plan goes on with it.
                        if let Some((provider, manifest, diff_ids)) =
                            self.built_output(recipe, &done)
                        {
                            item.reasons.push(format!(
                                "its declared output, image {} as {provider} built it, is in the store: what depends on it stays cached if this build reproduces it",
                                short(&to_digest(manifest.digest()).expect("sha256 descriptor"))
                            ));
                            let built = Built::new(
                                recipe,
                                input,
                                (manifest, diff_ids),
                                false,
                                Duration::ZERO,
                            );
                            done.insert(recipe.name.clone(), built);
                        }
                    }
                }
            }
            items.push(item);
        }
        Ok(items)
    }

    /// For a fixed-output recipe: the cached image of another recipe that
    /// provides the same image, and that recipe's name.
    fn built_output(
        &self,
        recipe: &Recipe,
        done: &BTreeMap<String, Built>,
    ) -> Option<(String, Descriptor, Vec<Digest>)> {
        recipe.output.as_ref()?;
        self.graph
            .set()
            .iter()
            .filter(|r| r.name != recipe.name && r.output.is_some())
            .filter(|r| r.provides() == recipe.provides())
            .find_map(|r| {
                let (input, _) = self.input_of(r, done)?;
                let (manifest, diff_ids) = self.cached(&input, &r.name)?;
                Some((r.name.clone(), manifest, diff_ids))
            })
    }

    /// What changed since the last build of `name` in this store.
    fn why(&self, name: &str, input_json: &[u8]) -> Vec<String> {
        if self.opts.rebuild {
            return vec!["--rebuild".to_owned()];
        }
        match fs::read(self.inputs_path(name)) {
            Ok(old) => {
                let diff = crate::recipe::diff_inputs(&old, input_json);
                if diff.is_empty() {
                    vec![
                        "same inputs as the last build, whose image is no longer in the store"
                            .to_owned(),
                    ]
                } else {
                    diff
                }
            }
            Err(_) => vec!["never built in this store".to_owned()],
        }
    }
}
